-- 011_quota.sql — every local sender's outbox quota.
--
-- In pull mail the sender's ISP keeps outgoing mail until the receivers
-- fetch it, so what a sender may leave waiting is bounded: a number of
-- messages and a number of octets (the stored, sealed bodies). The milter's
-- configuration holds the default (quota_messages, quota_bytes);
-- sender_quota holds an administrator's override per address.
--
-- What counts ("waiting"): a message with at least one recipient that has
-- not retrieved it (outbox.retrieved_at NULL) and whose body is still kept
-- (body_deleted_at NULL). An ack that marks the last recipient's row ends
-- the count in its own commit, before mod_stubmail drops the body. Mail
-- that was pushed is never stored and never counts. waiting_message is the
-- one definition: the quota check and the sender_usage view both read it.
--
-- The check and the store are one: outbox_store_quota() takes the sender's
-- "quota" advisory lock (held to the commit), reads the sender's use and
-- stores through outbox_store() only when the message fits. A second
-- session storing for the same sender waits for the first to commit and
-- then sees its message, so two sessions cannot both slip under the quota.

-- NULL: the milter's default (quota_messages, quota_bytes); 0: no limit.
CREATE TABLE sender_quota (
    address      text PRIMARY KEY CHECK (address = lower(address) AND address LIKE '%_@_%'),
    max_messages bigint CHECK (max_messages >= 0),
    max_bytes    bigint CHECK (max_bytes >= 0)
);

-- The quota check reads one sender's unfinished messages; the ack path
-- sets body_deleted_at, which takes a message out of this index.
CREATE INDEX message_kept_by_sender ON message (sender) WHERE body_deleted_at IS NULL;

CREATE VIEW waiting_message AS
SELECT m.id, m.sender, m.size, m.created_at
  FROM message m
 WHERE m.body_deleted_at IS NULL
   AND EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id AND o.retrieved_at IS NULL);

-- Each sender's use, for the administrator (docs/admin-guide.md): senders
-- with mail waiting, and senders with an override. max_*: the override,
-- NULL where the milter's default applies.
CREATE VIEW sender_usage AS
SELECT coalesce(u.sender, q.address) AS sender,
       coalesce(u.messages, 0) AS messages,
       coalesce(u.bytes, 0) AS bytes,
       u.oldest,
       q.max_messages, q.max_bytes
  FROM (SELECT sender, count(*) AS messages, sum(size)::bigint AS bytes,
               min(created_at) AS oldest
          FROM waiting_message GROUP BY sender) u
  FULL JOIN sender_quota q ON q.address = u.sender;

-- The "quota" lock class: one lock per sender, hashtext(sender).
CREATE OR REPLACE FUNCTION stubmail_lock_class(p_name text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    class integer := CASE p_name
        WHEN 'migrate' THEN 7239031
        WHEN 'pollerd' THEN 7239032
        WHEN 'subscription' THEN 7239033
        WHEN 'quota' THEN 7239034
    END;
BEGIN
    IF class IS NULL THEN
        RAISE EXCEPTION 'stubmail_lock_class: no lock class named %', quote_nullable(p_name);
    END IF;
    RETURN class;
END $$;

-- A sender's use and quota: the override where sender_quota has one, else
-- the defaults given (the milter's configuration). 0 is no limit; with no
-- limit at all the use is not read (NULL): that costs a read of every
-- waiting message of the sender.
CREATE FUNCTION sender_quota_use(p_sender text, p_default_messages bigint,
                                 p_default_bytes bigint,
                                 OUT messages bigint, OUT bytes bigint,
                                 OUT max_messages bigint, OUT max_bytes bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT q.max_messages, q.max_bytes INTO max_messages, max_bytes
      FROM sender_quota q WHERE q.address = p_sender;
    max_messages := coalesce(max_messages, p_default_messages);
    max_bytes := coalesce(max_bytes, p_default_bytes);
    IF max_messages > 0 OR max_bytes > 0 THEN
        SELECT count(*), coalesce(sum(w.size), 0)::bigint INTO messages, bytes
          FROM waiting_message w WHERE w.sender = p_sender;
    END IF;
END $$;

-- outbox_store() (sql/010) when the message fits the sender's quota, in one
-- statement. stored: as outbox_store() returns it (true: stored now;
-- false: stored already, or refused); refused: over the quota, nothing
-- stored. messages, bytes: the sender's use without this message (NULL
-- when no limit applies); max_messages, max_bytes: its quota (0: no limit). A message sent again
-- after a broken connection (its id stored already) is never refused: it
-- is what the use counts.
CREATE FUNCTION outbox_store_quota(p_id text, p_sender text, p_size bigint, p_spool_name text,
                                   p_format text, p_recipients text[],
                                   p_recipient_domains text[], p_contacts text[],
                                   p_contact_domains text[], p_body bytea,
                                   p_default_messages bigint, p_default_bytes bigint,
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
                               p_recipient_domains, p_contacts, p_contact_domains, p_body);
    END IF;
END $$;
