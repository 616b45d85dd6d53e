-- 021_submission.sql — a message a client sends again is stored once.
--
-- A milter that dies between its commit and its reply (or whose reply is
-- lost) makes the MTA answer 4xx; the client keeps the message and sends
-- it again, and the milter, which stores every attempt under a new random
-- id, stored it twice: the recipient got it twice. The MTA's queue id
-- changes with every attempt, so it cannot say that two attempts are one
-- message; what a retry repeats is the envelope and the content.
--
-- message.submission is that identity: the milter's SHA-256 over the
-- content as received (every header but Received, which an MTA in front
-- of the milter may write anew at each attempt with its queue id; the body), the
-- envelope sender and the recipients, in order (milter/smf_ident.c). The
-- milter gives one only for a message that carries a Message-ID: RFC 5322
-- makes that the identity of one message, so an identical copy is this
-- message again; without one, two identical sends (a script's alert sent
-- twice) cannot be told from a retry and both are stored. It is scoped by
-- sender (UNIQUE (sender, submission)): a Message-ID is the sender's to
-- choose, and another sender's copy is another message.
--
-- A retry is an attempt within submission_window() (a day) of the stored
-- copy: MTAs retry a 4xx within minutes to about an hour (Postfix backs off
-- to 4000 s), and a day still covers retries while the milter was down for
-- hours. A copy sent after the window is a resend on purpose (a bounce
-- resent by hand, an MUA's "send again" keeping the Message-ID): it is
-- stored, and the older copy gives up its identity (submission NULL).
--
-- outbox_store_quota() decides under the sender's "quota" lock (sql/011),
-- which every store of that sender takes to its commit, so two attempts
-- of one message at once are decided one after the other; the constraint
-- is what holds whatever else writes message rows.

ALTER TABLE message ADD COLUMN submission bytea
    CONSTRAINT message_submission_sha256 CHECK (octet_length(submission) = 32),
    ADD CONSTRAINT message_submission_unique UNIQUE (sender, submission);

CREATE FUNCTION submission_window() RETURNS interval
LANGUAGE sql IMMUTABLE AS $$ SELECT interval '1 day' $$;

-- outbox_store (sql/020) keeping the identity: p_submission NULL for none.
DROP FUNCTION outbox_store(text, text, bigint, text, text, text[], text[], text[], text[], bytea,
                           text[], text[], text, bytea);
CREATE FUNCTION outbox_store(p_id text, p_sender text, p_size bigint, p_spool_name text,
                             p_format text, p_recipients text[], p_recipient_domains text[],
                             p_contacts text[], p_contact_domains text[], p_body bytea,
                             p_notify text[] DEFAULT NULL, p_orcpt text[] DEFAULT NULL,
                             p_envid text DEFAULT NULL, p_receipt_hash bytea DEFAULT NULL,
                             p_submission bytea DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message (id, sender, size, spool_name, format, body, dsn_envid, submission)
    VALUES (p_id, p_sender, p_size, p_spool_name, p_format, p_body, nullif(p_envid, ''),
            p_submission)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM 1 FROM message
         WHERE id = p_id AND sender = p_sender
           AND spool_name IS NOT DISTINCT FROM p_spool_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'outbox_store: message id % is another message''s', p_id;
        END IF;
        RETURN false;
    END IF;
    INSERT INTO outbox (message_id, recipient, recipient_domain, dsn_notify, dsn_orcpt,
                        receipt_hash)
    SELECT p_id, r, d, string_to_array(nullif(n, ''), ','), nullif(oc, ''), p_receipt_hash
      FROM unnest(p_recipients, p_recipient_domains,
                  coalesce(p_notify, '{}'::text[]), coalesce(p_orcpt, '{}'::text[]))
           AS t(r, d, n, oc)
     WHERE r IS NOT NULL
    ON CONFLICT DO NOTHING;
    -- sorted, so that concurrent learners take row locks in the same order
    INSERT INTO address_book (owner, contact, contact_domain)
    SELECT p_sender, c, d FROM unnest(p_contacts, p_contact_domains) AS t(c, d) ORDER BY c
    ON CONFLICT DO NOTHING;
    RETURN true;
END $$;

-- outbox_store_quota (sql/020) with the identity. retry_of: the id of the
-- copy stored already when this is a retry of it (then nothing is stored
-- and nothing refused: the earlier copy stands, and it is what the quota
-- counts), else NULL.
DROP FUNCTION outbox_store_quota(text, text, bigint, text, text, text[], text[], text[],
                                 text[], bytea, bigint, bigint, text[], text[], text, bytea);
CREATE FUNCTION outbox_store_quota(p_id text, p_sender text, p_size bigint, p_spool_name text,
                                   p_format text, p_recipients text[],
                                   p_recipient_domains text[], p_contacts text[],
                                   p_contact_domains text[], p_body bytea,
                                   p_default_messages bigint, p_default_bytes bigint,
                                   p_notify text[] DEFAULT NULL, p_orcpt text[] DEFAULT NULL,
                                   p_envid text DEFAULT NULL, p_receipt_hash bytea DEFAULT NULL,
                                   p_submission bytea DEFAULT NULL, OUT stored boolean, OUT refused boolean,
                                   OUT messages bigint, OUT bytes bigint,
                                   OUT max_messages bigint, OUT max_bytes bigint,
                                   OUT retry_of text)
LANGUAGE plpgsql AS $$
DECLARE
    prior record;
BEGIN
    PERFORM pg_advisory_xact_lock(stubmail_lock_class('quota'), hashtext(p_sender));
    SELECT u.messages, u.bytes, u.max_messages, u.max_bytes
      INTO messages, bytes, max_messages, max_bytes
      FROM sender_quota_use(p_sender, p_default_messages, p_default_bytes) u;
    stored := false;
    refused := false;
    IF p_submission IS NOT NULL THEN
        SELECT m.id, m.created_at INTO prior
          FROM message m WHERE m.sender = p_sender AND m.submission = p_submission;
        IF FOUND AND prior.id <> p_id THEN
            IF prior.created_at > now() - submission_window() THEN
                retry_of := prior.id;
                RETURN;
            END IF;
            UPDATE message SET submission = NULL WHERE id = prior.id;
        END IF;
    END IF;
    refused := NOT EXISTS (SELECT 1 FROM message WHERE id = p_id)
               AND ((max_messages > 0 AND messages + 1 > max_messages)
                    OR (max_bytes > 0 AND bytes + p_size > max_bytes));
    IF NOT refused THEN
        stored := outbox_store(p_id, p_sender, p_size, p_spool_name, p_format, p_recipients,
                               p_recipient_domains, p_contacts, p_contact_domains, p_body,
                               p_notify, p_orcpt, p_envid, p_receipt_hash, p_submission);
    END IF;
END $$;
