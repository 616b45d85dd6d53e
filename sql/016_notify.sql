-- 016_notify.sql — delivery status notifications the sender asked for
-- (RFC 3461): success notices when a recipient's ISP retrieved the
-- message, failure notices when it rejected it.
--
-- The milter records what RCPT TO and MAIL FROM carried: per outbox row
-- the NOTIFY keywords (dsn_notify: NULL when the sender gave none, which
-- RFC 3461 leaves to the MTA and Postfix takes as failure and delay
-- notices; '{never}'; or some of 'success', 'failure', 'delay') and the
-- ORCPT (dsn_orcpt, xtext-decoded: "rfc822;bob@b.example"); per message
-- the ENVID (message.dsn_envid, decoded). stubmail-janitor hands each
-- notice due to the MTA and records it in outbox.notified_at, in the
-- transaction that claimed the row: a row is noticed once.
ALTER TABLE outbox ADD COLUMN dsn_notify text[]
    CONSTRAINT outbox_dsn_notify_keywords
    CHECK (dsn_notify <@ ARRAY['success', 'failure', 'delay', 'never']
           AND cardinality(dsn_notify) > 0
           AND (NOT 'never' = ANY (dsn_notify) OR cardinality(dsn_notify) = 1)),
    ADD COLUMN dsn_orcpt text,
    ADD COLUMN notified_at timestamptz;
ALTER TABLE message ADD COLUMN dsn_envid text;

-- The one definition of "a notice is due for this row": the recipient's
-- ISP acked it (retrieved, or rejected with a reason), the sender did not
-- recall it (sql/015: a recall sets retrieved_at too; an ack after the
-- recall clears recalled_at and counts), nobody noticed it yet, and the
-- sender asked for that kind: success only with NOTIFY=SUCCESS (no
-- backscatter), failure with NOTIFY=FAILURE or without NOTIFY. Mail from
-- the null sender is never diverted; the janitor checks the sender anyway.
CREATE FUNCTION outbox_notice_due(o outbox) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT o.retrieved_at IS NOT NULL AND o.recalled_at IS NULL AND o.notified_at IS NULL
       AND CASE WHEN o.rejected_reason IS NULL THEN coalesce('success' = ANY (o.dsn_notify), false)
                ELSE o.dsn_notify IS NULL OR 'failure' = ANY (o.dsn_notify) END
$$;

-- What the janitor looks for: few rows, found without a scan of the outbox.
CREATE INDEX outbox_notice_due_idx ON outbox (message_id)
    WHERE notified_at IS NULL AND retrieved_at IS NOT NULL AND recalled_at IS NULL
      AND (rejected_reason IS NOT NULL OR 'success' = ANY (dsn_notify));

-- outbox_store (sql/010) with what the sender asked for: p_notify holds
-- per recipient its NOTIFY keywords joined by commas ('' for none),
-- p_orcpt its ORCPT ('' for none), p_envid the message's ENVID. Without
-- them (NULL, the defaults) it stores as sql/010's did.
DROP FUNCTION outbox_store(text, text, bigint, text, text, text[], text[], text[], text[], bytea);
CREATE FUNCTION outbox_store(p_id text, p_sender text, p_size bigint, p_spool_name text,
                             p_format text, p_recipients text[], p_recipient_domains text[],
                             p_contacts text[], p_contact_domains text[], p_body bytea,
                             p_notify text[] DEFAULT NULL, p_orcpt text[] DEFAULT NULL,
                             p_envid text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message (id, sender, size, spool_name, format, body, dsn_envid)
    VALUES (p_id, p_sender, p_size, p_spool_name, p_format, p_body, nullif(p_envid, ''))
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
    INSERT INTO outbox (message_id, recipient, recipient_domain, dsn_notify, dsn_orcpt)
    SELECT p_id, r, d, string_to_array(nullif(n, ''), ','), nullif(oc, '')
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

-- outbox_store_quota (sql/011) passing them on; called as before (12
-- arguments) it stores without them.
DROP FUNCTION outbox_store_quota(text, text, bigint, text, text, text[], text[], text[],
                                 text[], bytea, bigint, bigint);
CREATE FUNCTION outbox_store_quota(p_id text, p_sender text, p_size bigint, p_spool_name text,
                                   p_format text, p_recipients text[],
                                   p_recipient_domains text[], p_contacts text[],
                                   p_contact_domains text[], p_body bytea,
                                   p_default_messages bigint, p_default_bytes bigint,
                                   p_notify text[] DEFAULT NULL, p_orcpt text[] DEFAULT NULL,
                                   p_envid text DEFAULT NULL,
                                   OUT stored boolean, OUT refused boolean,
                                   OUT messages bigint, OUT bytes bigint,
                                   OUT max_messages bigint, OUT max_bytes bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(stubmail_lock_class('quota'), hashtext(p_sender));
    SELECT u.messages, u.bytes, u.max_messages, u.max_bytes
      INTO messages, bytes, max_messages, max_bytes
      FROM sender_quota_use(p_sender, p_default_messages, p_default_bytes) u;
    refused := NOT EXISTS (SELECT 1 FROM message WHERE id = p_id)
               AND ((max_messages > 0 AND messages + 1 > max_messages)
                    OR (max_bytes > 0 AND bytes + p_size > max_bytes));
    stored := false;
    IF NOT refused THEN
        stored := outbox_store(p_id, p_sender, p_size, p_spool_name, p_format, p_recipients,
                               p_recipient_domains, p_contacts, p_contact_domains, p_body,
                               p_notify, p_orcpt, p_envid);
    END IF;
END $$;
