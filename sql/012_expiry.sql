-- 012_expiry.sql — unretrieved mail expires, and the polls stop listing it
-- at that instant.
--
-- Every message gets the instant it expires when it is stored:
-- expires_at, from the storing session's stubmail.expire_after setting
-- (stubmail-milter sets it from its expire_after key on each connection),
-- 100 days without one. A recipient that has not retrieved the message by
-- then is no longer listed by any poll (the POST poll, the GET poll, its
-- ETag, the UDP responder's cursor) nor served by a fetch, from that
-- instant on, whether or not stubmail-janitor has run: every reader
-- compares expires_at with now(). stubmail-janitor later tells the sender
-- (a delivery status notification) and removes the rows and the body.
--
-- Messages stored before this migration expire 100 days after they were
-- stored, as if they had been stored with the default.
--
-- Installed databases ran 004 and 008: the functions that fill
-- pending_match are re-created here with the expiry copied into each
-- match (CREATE OR REPLACE keeps their triggers), so that a poll reads
-- only pending_match as before.

-- The lifetime a message stored now gets: the session's
-- stubmail.expire_after ('' or unset: 100 days), an interval ('864000 s').
CREATE FUNCTION outbox_lifetime() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('stubmail.expire_after', true), ''),
                    '100 days')::interval
$$;

ALTER TABLE message ADD COLUMN expires_at timestamptz;
UPDATE message SET expires_at = created_at + interval '100 days';
ALTER TABLE message ALTER COLUMN expires_at SET DEFAULT now() + outbox_lifetime(),
                    ALTER COLUMN expires_at SET NOT NULL;
-- When stubmail-janitor handed the delay warning (delay_warning) of the
-- message to the MTA: one warning per message, never two.
ALTER TABLE message ADD COLUMN warned_at timestamptz;

-- Each pending match carries its message's expiry, so that a poll and its
-- ETag filter on the rows they read anyway, without a join.
ALTER TABLE pending_match ADD COLUMN expires_at timestamptz;
UPDATE pending_match p SET expires_at = m.expires_at FROM message m WHERE m.id = p.message_id;
ALTER TABLE pending_match ALTER COLUMN expires_at SET NOT NULL;

-- sql/008's functions, the expiry copied into each new match; what each
-- does and why is said in 004 and 008.
CREATE OR REPLACE FUNCTION pending_match_outbox_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subscription_lock(ARRAY(SELECT DISTINCT recipient_domain FROM new_outbox), false);
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM pending_match p
         USING new_outbox n
         WHERE n.retrieved_at IS NOT NULL
           AND p.message_id = n.message_id AND p.recipient = n.recipient;
    END IF;
    INSERT INTO pending_match (domain, message_id, recipient, expires_at)
    SELECT o.recipient_domain, o.message_id, o.recipient, m.expires_at
      FROM new_outbox o JOIN message m ON m.id = o.message_id
     WHERE o.retrieved_at IS NULL
       AND EXISTS (SELECT 1 FROM subscription s
                    WHERE s.domain = o.recipient_domain AND s.recipient = o.recipient
                      AND pair_matches(s.sender, m.sender))
     ORDER BY m.created_at, o.message_id, o.recipient
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pending_match_subscription_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subscription_lock(ARRAY(SELECT DISTINCT domain FROM new_pairs), true);
    -- the cost and the join order: sql/008
    WITH candidate AS MATERIALIZED (
        SELECT o.recipient_domain AS domain, o.recipient, o.message_id, m.created_at,
               m.expires_at, sender_patterns(m.sender) AS pattern
          FROM outbox o JOIN message m ON m.id = o.message_id
         WHERE o.retrieved_at IS NULL
           AND (o.recipient_domain, o.recipient) IN
               (SELECT DISTINCT domain, recipient FROM new_pairs)
    )
    INSERT INTO pending_match (domain, message_id, recipient, expires_at)
    SELECT domain, message_id, recipient, expires_at FROM (
        SELECT c.domain, c.message_id, c.recipient, c.created_at, c.expires_at
          FROM candidate c JOIN new_pairs n
            ON n.domain = c.domain AND n.recipient = c.recipient AND n.sender = c.pattern[1]
        UNION
        SELECT c.domain, c.message_id, c.recipient, c.created_at, c.expires_at
          FROM candidate c JOIN new_pairs n
            ON n.domain = c.domain AND n.recipient = c.recipient AND n.sender = c.pattern[2]
    ) matched
     ORDER BY created_at, message_id, recipient
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- The ETag of a domain's poll (sql/004) over its unexpired matches, and
-- until when it holds without a notification: the next expiry among them
-- (milliseconds since the epoch, rounded down; NULL when none will
-- expire). An expiry changes the ETag but commits nothing, so nobody is
-- notified of it: a cache of the ETag (mod_stubmail's poll cache, the UDP
-- responder's) keeps it until valid_until_ms at most. One scan for both.
CREATE FUNCTION poll_etag_until(p_domain text, OUT etag text, OUT valid_until_ms bigint)
LANGUAGE sql STABLE AS $$
    SELECT '"' || coalesce((SELECT version FROM subscription_state
                             WHERE domain = p_domain), 0)
           || '.' || count(*) || '.' || coalesce(max(seq), 0)
           || '.' || left(md5(coalesce(string_agg(seq::text, ',' ORDER BY seq), '')), 16)
           || '"',
           floor(extract(epoch FROM min(expires_at)) * 1000)::bigint
      FROM pending_match WHERE domain = p_domain AND expires_at > now()
$$;

CREATE OR REPLACE FUNCTION poll_etag(p_domain text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT etag FROM poll_etag_until(p_domain)
$$;
