-- 004_subscription.sql — subscriptions and the pending matches behind
-- GET /v1/poll (docs/PROTOCOL.md, "POST /v1/subscription" and "GET /v1/poll
-- — conditional").
--
-- A polling domain tells the outbox once which (sender pattern, recipient)
-- pairs it wants, and afterwards only what changed. Triggers keep
-- pending_match equal to "every outbox row not yet acked whose sender
-- matches a pair of its recipient's domain", so that a poll reads only
-- pending_match: its cost follows what is new, not the size of the outbox
-- or the number of pairs.
--
-- Concurrency: the milter inserts outbox rows in transactions that run next
-- to a subscription change of the same domain. Under READ COMMITTED neither
-- would see the other's uncommitted rows (the outbox trigger misses the new
-- pair, the backfill misses the new outbox row), and the match would be lost
-- for good. So every writer takes an advisory lock per polling domain
-- (class 7239033, hashtext(domain)) before it looks: outbox inserts and acks
-- share it, subscription changes take it exclusively. Plpgsql takes a new
-- snapshot for each query, so whoever waited sees what the other committed.
-- Outbox inserts lock their domains in hash order, so two of them never wait
-- for each other in a cycle.

-- The pairs a polling domain subscribed to. sender is an address or
-- *@domain, recipient an address at domain (mod_stubmail checks both).
CREATE TABLE subscription (
    domain    text NOT NULL,
    recipient text NOT NULL,
    sender    text NOT NULL,
    PRIMARY KEY (domain, recipient, sender)
);

-- Raised by every accepted change; no row means version 0 (nothing
-- subscribed yet, or forgotten: the poller then starts over with a reset).
CREATE TABLE subscription_state (
    domain  text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0 CHECK (version >= 0)
);

-- Every (message, recipient) still in the outbox, not yet acked, that the
-- recipient's domain subscribed to. seq orders a domain's entries by when
-- they became pending; the cascade drops an entry with its outbox row.
CREATE TABLE pending_match (
    seq        bigserial NOT NULL,
    domain     text NOT NULL,
    message_id text NOT NULL,
    recipient  text NOT NULL,
    PRIMARY KEY (message_id, recipient),
    FOREIGN KEY (message_id, recipient) REFERENCES outbox (message_id, recipient)
        ON DELETE CASCADE
);
CREATE INDEX pending_match_by_domain ON pending_match (domain, seq);

-- Outbox rows inserted or updated: those unacked whose pair is subscribed
-- become pending; an ack (retrieved_at set) ends the match, and a row made
-- unacked again (by hand) is matched again. One function for both
-- triggers: each names its transition table new_outbox.
CREATE FUNCTION pending_match_outbox_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7239033, h)
       FROM (SELECT DISTINCT hashtext(recipient_domain) AS h FROM new_outbox) d
      ORDER BY h;
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM pending_match p
         USING new_outbox n
         WHERE n.retrieved_at IS NOT NULL
           AND p.message_id = n.message_id AND p.recipient = n.recipient;
    END IF;
    INSERT INTO pending_match (domain, message_id, recipient)
    SELECT o.recipient_domain, o.message_id, o.recipient
      FROM new_outbox o JOIN message m ON m.id = o.message_id
     WHERE o.retrieved_at IS NULL
       AND EXISTS (SELECT 1 FROM subscription s
                    WHERE s.domain = o.recipient_domain AND s.recipient = o.recipient
                      AND s.sender IN (m.sender, '*@' || split_part(m.sender, '@', 2)))
     ORDER BY m.created_at, o.message_id, o.recipient
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER pending_match_outbox_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_outbox_change();
CREATE TRIGGER pending_match_outbox_update AFTER UPDATE ON outbox
    REFERENCING NEW TABLE AS new_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_outbox_change();

-- New pairs: backfill from what the outbox already holds for them.
CREATE FUNCTION pending_match_subscription_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7239033, h)
       FROM (SELECT DISTINCT hashtext(domain) AS h FROM new_pairs) d
      ORDER BY h;
    -- Cost: the unacked outbox rows of the recipients named, once, then
    -- hash joins on (domain, recipient, sender) for the exact pairs and
    -- (domain, recipient, *@domain) for the wildcards. A transition table has
    -- no statistics, so left to itself the planner joined the pairs with
    -- the outbox by recipient first, pairs x pending rows (a 100k-pair reset
    -- on a 1M-row outbox took a minute; docs/BENCHMARKS.md); the
    -- materialized CTE fixes the order.
    WITH candidate AS MATERIALIZED (
        SELECT o.recipient_domain AS domain, o.recipient, o.message_id, m.created_at,
               m.sender, '*@' || split_part(m.sender, '@', 2) AS sender_any
          FROM outbox o JOIN message m ON m.id = o.message_id
         WHERE o.retrieved_at IS NULL
           AND (o.recipient_domain, o.recipient) IN
               (SELECT DISTINCT domain, recipient FROM new_pairs)
    )
    INSERT INTO pending_match (domain, message_id, recipient)
    SELECT domain, message_id, recipient FROM (
        SELECT c.domain, c.message_id, c.recipient, c.created_at
          FROM candidate c JOIN new_pairs n
            ON n.domain = c.domain AND n.recipient = c.recipient AND n.sender = c.sender
        UNION
        SELECT c.domain, c.message_id, c.recipient, c.created_at
          FROM candidate c JOIN new_pairs n
            ON n.domain = c.domain AND n.recipient = c.recipient AND n.sender = c.sender_any
    ) matched
     ORDER BY created_at, message_id, recipient
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER pending_match_subscription_insert AFTER INSERT ON subscription
    REFERENCING NEW TABLE AS new_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_subscription_insert();

-- Pairs gone: drop the matches no remaining pair of the recipient covers.
CREATE FUNCTION pending_match_subscription_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7239033, h)
       FROM (SELECT DISTINCT hashtext(domain) AS h FROM old_pairs) d
      ORDER BY h;
    DELETE FROM pending_match p
     USING message m, (SELECT DISTINCT domain, recipient FROM old_pairs) g
     WHERE p.domain = g.domain AND p.recipient = g.recipient AND m.id = p.message_id
       AND NOT EXISTS (SELECT 1 FROM subscription s
                        WHERE s.domain = p.domain AND s.recipient = p.recipient
                          AND s.sender IN (m.sender, '*@' || split_part(m.sender, '@', 2)));
    RETURN NULL;
END $$;
CREATE TRIGGER pending_match_subscription_delete AFTER DELETE ON subscription
    REFERENCING OLD TABLE AS old_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_subscription_delete();

-- A listener (the UDP responder) may cache poll_etag per domain: tell it
-- when a domain's pending set or version changed. pg_notify folds equal
-- notifications of one transaction into one.
CREATE FUNCTION pending_match_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stubmail_poll', domain) FROM (SELECT DISTINCT domain FROM changed) d;
    RETURN NULL;
END $$;
CREATE TRIGGER pending_match_notify_insert AFTER INSERT ON pending_match
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_notify();
CREATE TRIGGER pending_match_notify_delete AFTER DELETE ON pending_match
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_notify();
CREATE TRIGGER subscription_state_notify_update AFTER UPDATE ON subscription_state
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_notify();
CREATE TRIGGER subscription_state_notify_delete AFTER DELETE ON subscription_state
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION pending_match_notify();

-- The entity tag of a domain's poll: the complete HTTP ETag value, double
-- quotes included, so that the header, this function and the cursor of a
-- UDP poll are the same octets. It changes whenever the version or the set
-- of pending matches changes: count and max(seq) alone would miss an ack of
-- an old entry together with the commit of a concurrent insert whose seq
-- was drawn earlier, so a digest over the ordered seqs is part of it. With
-- nothing pending it reads one index entry.
CREATE FUNCTION poll_etag(p_domain text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT '"' || coalesce((SELECT version FROM subscription_state
                             WHERE domain = p_domain), 0)
           || '.' || count(*) || '.' || coalesce(max(seq), 0)
           || '.' || left(md5(coalesce(string_agg(seq::text, ',' ORDER BY seq), '')), 16)
           || '"'
      FROM pending_match WHERE domain = p_domain
$$;

-- One subscription change, all or nothing (one statement): with p_reset the
-- domain's pairs become p_add; otherwise p_base must be the current version
-- (else nothing changes and ok is false), p_remove goes, p_add comes (both
-- JSON arrays of {"sender", "recipient"}; adding a pair that is there or
-- removing one that is not is no error). Every accepted change with pairs,
-- and every reset, makes a new version, greater than any before.
CREATE FUNCTION subscription_change(p_domain text, p_reset boolean, p_base bigint,
                                    p_add jsonb, p_remove jsonb)
RETURNS TABLE (ok boolean, version bigint) LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7239033, hashtext(p_domain));
    INSERT INTO subscription_state AS s (domain, version) VALUES (p_domain, 0)
        ON CONFLICT (domain) DO NOTHING;
    SELECT s.version INTO cur FROM subscription_state s WHERE s.domain = p_domain
        FOR UPDATE;
    IF NOT p_reset AND p_base IS DISTINCT FROM cur THEN
        RETURN QUERY SELECT false, cur;
        RETURN;
    END IF;
    IF p_reset THEN
        DELETE FROM subscription s WHERE s.domain = p_domain;
    ELSIF jsonb_array_length(p_remove) > 0 THEN
        DELETE FROM subscription s
         USING jsonb_to_recordset(p_remove) AS x(sender text, recipient text)
         WHERE s.domain = p_domain AND s.recipient = x.recipient AND s.sender = x.sender;
    END IF;
    IF jsonb_array_length(p_add) > 0 THEN
        INSERT INTO subscription (domain, recipient, sender)
        SELECT DISTINCT p_domain, x.recipient, x.sender
          FROM jsonb_to_recordset(p_add) AS x(sender text, recipient text)
        ON CONFLICT DO NOTHING;
    END IF;
    IF p_reset OR jsonb_array_length(p_add) + jsonb_array_length(p_remove) > 0 THEN
        -- the clock in milliseconds: a version never comes back, also not
        -- after subscription_state lost rows or the database went back to
        -- a backup, so a poller's remembered version cannot name another set
        cur := greatest(cur + 1, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
        UPDATE subscription_state s SET version = cur WHERE s.domain = p_domain;
    END IF;
    RETURN QUERY SELECT true, cur;
END $$;
