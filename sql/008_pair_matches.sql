-- 008_pair_matches.sql — the subscription match rule and the advisory-lock
-- classes, each written once; sql/004's functions re-created over them.
--
-- Installed databases have run 001-007, so those files stay as they are:
-- CREATE OR REPLACE keeps each function's identity, and the triggers of
-- 004 call the new bodies from the next statement on. Behaviour is
-- unchanged: the same rows match, the same locks are taken.

-- The advisory-lock classes of stubmail: the first key of
-- pg_advisory_[xact_]lock[_shared](class, key).
--
--   name           class    key                  taken by
--   migrate        7239031  (none)               sql/stubmail-migrate, one run at a
--                                                time (it locks before any
--                                                migration exists, so it writes
--                                                the number itself)
--   pollerd        7239032  hashtext(domain)     pollerd: one instance works on a
--                                                remote domain at a time
--   subscription   7239033  hashtext(domain)     below: outbox inserts and acks
--                                                share it, subscription changes
--                                                of that polling domain take it
--                                                exclusively (sql/004's header)
--
-- An unknown name is an error, not NULL: the lock functions are strict, and
-- a NULL class would take no lock at all without a word. With a constant
-- name the planner evaluates the call once (IMMUTABLE).
CREATE FUNCTION stubmail_lock_class(p_name text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    class integer := CASE p_name
        WHEN 'migrate' THEN 7239031
        WHEN 'pollerd' THEN 7239032
        WHEN 'subscription' THEN 7239033
    END;
BEGIN
    IF class IS NULL THEN
        RAISE EXCEPTION 'stubmail_lock_class: no lock class named %', quote_nullable(p_name);
    END IF;
    RETURN class;
END $$;

-- Takes the "subscription" lock of each of domains (polling domains): shared
-- for outbox writers, exclusive for subscription changes. In hash order, so
-- that two writers locking several domains never wait for each other in a
-- cycle (sql/004's header says why the lock exists).
CREATE FUNCTION subscription_lock(p_domains text[], p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h integer;
BEGIN
    FOR h IN SELECT DISTINCT hashtext(d) FROM unnest(p_domains) AS d ORDER BY 1 LOOP
        IF p_exclusive THEN
            PERFORM pg_advisory_xact_lock(stubmail_lock_class('subscription'), h);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(stubmail_lock_class('subscription'), h);
        END IF;
    END LOOP;
END $$;

-- The match rule of a subscription pair (docs/PROTOCOL.md): a pair naming
-- subscribed_sender covers mail from sender when it names that address or
-- "*@" and the sender's domain. Addresses are stored normalised, so the
-- comparison is exact.
--
-- Two forms of the one rule. sender_patterns gives the two values a pair
-- may name to match sender, the address first: where a query joins many
-- pairs with much mail, it joins on equality with each of them, which the
-- planner can hash (pending_match_subscription_insert below; a third
-- pattern would need a third join there). pair_matches is the test for
-- one pair. Both are plain SQL expressions, IMMUTABLE and not STRICT, so
-- the planner inlines them: `pair_matches(s.sender, m.sender)` plans
-- exactly as the `s.sender IN (m.sender, '*@' || split_part(m.sender, '@',
-- 2))` that 004 wrote out, an index condition on subscription's primary
-- key (tests/sql/t-pair-matches.sql checks it).
CREATE FUNCTION sender_patterns(sender text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[sender, '*@' || split_part(sender, '@', 2)]
$$;

CREATE FUNCTION pair_matches(subscribed_sender text, sender text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT subscribed_sender = ANY (sender_patterns(sender))
$$;

-- sql/004's functions, with the rule and the lock from above; what each
-- does and why is said in 004.
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
    INSERT INTO pending_match (domain, message_id, recipient)
    SELECT o.recipient_domain, o.message_id, o.recipient
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
    -- Cost: the unacked outbox rows of the recipients named, once, then
    -- one hash join per pattern of sender_patterns() (the address, then
    -- *@ its domain) on (domain, recipient, pattern): equalities, so the
    -- planner can hash them, where pair_matches() in the join condition
    -- would compare every pair of a recipient with every pending row of
    -- it. A transition table has no statistics, so left to itself the
    -- planner joined the pairs with the outbox by recipient first, pairs x
    -- pending rows (a 100k-pair reset on a 1M-row outbox took a minute;
    -- docs/BENCHMARKS.md); the materialized CTE fixes the order. (One join
    -- over unnest(sender_patterns()) also hashes, but built a hash table
    -- twice the size and was some 10-20% slower on a 50k-pair reset.)
    WITH candidate AS MATERIALIZED (
        SELECT o.recipient_domain AS domain, o.recipient, o.message_id, m.created_at,
               sender_patterns(m.sender) AS pattern
          FROM outbox o JOIN message m ON m.id = o.message_id
         WHERE o.retrieved_at IS NULL
           AND (o.recipient_domain, o.recipient) IN
               (SELECT DISTINCT domain, recipient FROM new_pairs)
    )
    INSERT INTO pending_match (domain, message_id, recipient)
    SELECT domain, message_id, recipient FROM (
        SELECT c.domain, c.message_id, c.recipient, c.created_at
          FROM candidate c JOIN new_pairs n
            ON n.domain = c.domain AND n.recipient = c.recipient AND n.sender = c.pattern[1]
        UNION
        SELECT c.domain, c.message_id, c.recipient, c.created_at
          FROM candidate c JOIN new_pairs n
            ON n.domain = c.domain AND n.recipient = c.recipient AND n.sender = c.pattern[2]
    ) matched
     ORDER BY created_at, message_id, recipient
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pending_match_subscription_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subscription_lock(ARRAY(SELECT DISTINCT domain FROM old_pairs), true);
    DELETE FROM pending_match p
     USING message m, (SELECT DISTINCT domain, recipient FROM old_pairs) g
     WHERE p.domain = g.domain AND p.recipient = g.recipient AND m.id = p.message_id
       AND NOT EXISTS (SELECT 1 FROM subscription s
                        WHERE s.domain = p.domain AND s.recipient = p.recipient
                          AND pair_matches(s.sender, m.sender));
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION subscription_change(p_domain text, p_reset boolean,
                                               p_base bigint, p_add jsonb, p_remove jsonb)
RETURNS TABLE (ok boolean, version bigint) LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
BEGIN
    PERFORM subscription_lock(ARRAY[p_domain], true);
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
        -- the clock in milliseconds: a version never comes back (see 004)
        cur := greatest(cur + 1, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
        UPDATE subscription_state s SET version = cur WHERE s.domain = p_domain;
    END IF;
    RETURN QUERY SELECT true, cur;
END $$;
