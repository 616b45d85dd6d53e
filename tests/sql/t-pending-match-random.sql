-- t-pending-match-random.sql — 600 random outbox and subscription changes: pending_match always equals its recomputation
--
-- After each of 600 seeded random operations (outbox inserts, acks,
-- un-acks, deletes; subscription changes, refused changes, resets),
-- pending_match equals the from-scratch recomputation of tests/sql/lib.sql,
-- and each domain's poll_etag changed exactly when its pending entries or
-- its version did.
--
-- One session, so this checks what each trigger does, not the locks (the
-- race is tests/integration/test_subscription.py's). The seed makes a run
-- reproducible: an error names the operation and the rows that differ.
CREATE FUNCTION pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT a[1 + floor(random() * array_length(a, 1))::int]
$$;

-- n random pairs [sender pattern, recipient] of domain dom
CREATE FUNCTION random_pairs(n int, dom text, patterns text[], recipients text[])
RETURNS text[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    out text[] := ARRAY[]::text[];
    mine text[] := ARRAY(SELECT r FROM unnest(recipients) r WHERE r LIKE '%@' || dom);
BEGIN
    FOR i IN 1 .. n LOOP
        out := out || ARRAY[[pick(patterns), pick(mine)]];
    END LOOP;
    RETURN out;
END $$;

-- what a poll of dom depends on: its pending entries with their seqs, and
-- its version
CREATE FUNCTION poll_state(dom text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT version FROM subscription_state WHERE domain = dom), 0) || '|'
           || coalesce((SELECT string_agg(seq || ':' || message_id || ':' || recipient, ','
                                          ORDER BY seq)
                          FROM pending_match WHERE domain = dom), '')
$$;

DO $$
DECLARE
    -- two polling domains; e.example's rows are never subscribed
    recipients text[] := ARRAY['r1@c.example', 'r2@c.example', 'r3@c.example',
                               's1@d.example', 's2@d.example', 's3@d.example',
                               'n1@e.example'];
    senders text[] := ARRAY['alice@a.example', 'bob@a.example', 'carol@a.example',
                            'xavier@x.example', 'yvonne@x.example'];
    patterns text[] := senders || ARRAY['*@a.example', '*@x.example', '*@z.example'];
    domains text[] := ARRAY['c.example', 'd.example'];
    counts jsonb := '{}';
    op text;
    dom text;
    msg int := 0;
    k int;
    cur bigint;
    res record;
    bad text;
    state_before text[];
    etag_before text[];
    most_pending int := 0;
    r float8;
BEGIN
    PERFORM setseed(0.4711);
    FOR step IN 1 .. 600 LOOP
        state_before := ARRAY[poll_state('c.example'), poll_state('d.example')];
        etag_before := ARRAY[poll_etag('c.example'), poll_etag('d.example')];
        r := random();
        dom := pick(domains);
        IF r < 0.35 THEN
            -- one or two messages, their outbox rows in one statement
            op := 'insert';
            k := 1 + floor(random() * 2)::int;
            INSERT INTO message (id, sender, size, spool_name)
            SELECT lpad(to_hex(msg + i), 32, '0'), pick(senders), 1, lpad(to_hex(msg + i), 32, '0')
              FROM generate_series(1, k) AS i;
            INSERT INTO outbox (message_id, recipient, recipient_domain)
            SELECT DISTINCT lpad(to_hex(msg + i), 32, '0'), x, split_part(x, '@', 2)
              FROM generate_series(1, k) AS i,
                   LATERAL (SELECT pick(recipients) || '' AS x
                              FROM generate_series(1, 1 + floor(random() * 3)::int) AS j
                             WHERE i > 0) AS rcpt;
            msg := msg + k;
        ELSIF r < 0.55 THEN
            op := 'ack';
            UPDATE outbox SET retrieved_at = now()
             WHERE (message_id, recipient) IN
                   (SELECT message_id, recipient FROM outbox WHERE retrieved_at IS NULL
                     ORDER BY message_id, recipient
                    OFFSET floor(random() * 8)::int LIMIT 1 + floor(random() * 3)::int);
        ELSIF r < 0.60 THEN
            op := 'unack';      -- by hand: matched again
            UPDATE outbox SET retrieved_at = NULL
             WHERE (message_id, recipient) IN
                   (SELECT message_id, recipient FROM outbox WHERE retrieved_at IS NOT NULL
                     ORDER BY message_id, recipient OFFSET floor(random() * 4)::int LIMIT 1);
        ELSIF r < 0.63 THEN
            op := 'delete';     -- the cascade takes the outbox rows and matches
            DELETE FROM message
             WHERE id = (SELECT id FROM message ORDER BY id
                         OFFSET floor(random() * 10)::int LIMIT 1);
        ELSIF r < 0.90 THEN
            op := 'change';     -- add some pairs, remove some (there or not)
            cur := coalesce((SELECT version FROM subscription_state WHERE domain = dom), 0);
            SELECT * INTO res FROM subscription_change(dom, false, cur,
                pairs_json(random_pairs(floor(random() * 4)::int, dom, patterns, recipients)),
                pairs_json(ARRAY(SELECT ARRAY[sender, recipient] FROM subscription
                                  WHERE domain = dom ORDER BY recipient, sender
                                 OFFSET floor(random() * 4)::int
                                  LIMIT floor(random() * 3)::int)::text[]
                           || random_pairs(floor(random() * 2)::int, dom, patterns, recipients)));
            PERFORM assert_true(res.ok, format('step %s: a change on the current version', step));
        ELSIF r < 0.93 THEN
            op := 'stale';      -- an old base changes nothing
            cur := coalesce((SELECT version FROM subscription_state WHERE domain = dom), 0);
            SELECT * INTO res FROM subscription_change(dom, false, cur - 1,
                pairs_json(random_pairs(2, dom, patterns, recipients)), '[]');
            PERFORM assert_eq(res.ok, false, format('step %s: a change on an old version', step));
            PERFORM assert_eq(res.version, cur, format('step %s: the version after a refused change', step));
        ELSE
            op := 'reset';
            SELECT * INTO res FROM subscription_change(dom, true, NULL,
                pairs_json(random_pairs(floor(random() * 5)::int, dom, patterns, recipients)), '[]');
            PERFORM assert_true(res.ok, format('step %s: a reset', step));
        END IF;
        counts := jsonb_set(counts, ARRAY[op], to_jsonb(coalesce((counts->>op)::int, 0) + 1));

        SELECT string_agg(format('%s %s %s %s', d.what, d.domain, d.message_id, d.recipient), '; ')
          INTO bad FROM pending_match_diff d;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'step % (%): pending_match differs from the recomputation: %',
                step, op, bad;
        END IF;
        FOR i IN 1 .. 2 LOOP
            IF (poll_state(domains[i]) = state_before[i]) <> (poll_etag(domains[i]) = etag_before[i]) THEN
                RAISE EXCEPTION 'step % (%): %: poll state % -> %, but ETag % -> %', step, op,
                    domains[i], state_before[i], poll_state(domains[i]),
                    etag_before[i], poll_etag(domains[i]);
            END IF;
        END LOOP;
        most_pending := greatest(most_pending, (SELECT count(*) FROM pending_match)::int);
    END LOOP;

    RAISE NOTICE 'operations %, at most % pending', counts, most_pending;
    -- the run did test something: every kind of operation, real matches
    FOREACH op IN ARRAY ARRAY['insert', 'ack', 'unack', 'delete', 'change', 'stale', 'reset'] LOOP
        PERFORM assert_true(coalesce((counts->>op)::int, 0) >= 5, 'operations of kind ' || op);
    END LOOP;
    PERFORM assert_true(most_pending >= 10, 'at most ' || most_pending || ' pending at once');
END $$;
