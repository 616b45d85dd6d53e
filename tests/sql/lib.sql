-- tests/sql/lib.sql — what the SQL tests share, installed by tests/sql/run
-- into the template database every test copies (after the migrations).

-- assert_eq(got, want, what): raises, naming what and both values, unless
-- got and want are equal (NULL equals NULL here).
CREATE FUNCTION assert_eq(got anycompatible, want anycompatible, what text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF got IS DISTINCT FROM want THEN
        RAISE EXCEPTION '%: got %, want %', what, quote_nullable(got), quote_nullable(want);
    END IF;
END $$;

CREATE FUNCTION assert_true(cond boolean, what text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cond IS NOT TRUE THEN
        RAISE EXCEPTION '%: not true', what;
    END IF;
END $$;

-- What pending_match must hold, computed from scratch and spelled out on
-- purpose without sql/008's pair_matches(), so that a wrong rule there
-- shows too: every unacked outbox row whose recipient's domain subscribed
-- to a pair naming its sender or "*@" the sender's domain (the same query
-- as tests/integration/test_subscription.py's EXPECTED_SQL).
CREATE VIEW expected_pending_match AS
SELECT o.recipient_domain AS domain, o.message_id, o.recipient
  FROM outbox o JOIN message m ON m.id = o.message_id
 WHERE o.retrieved_at IS NULL
   AND EXISTS (SELECT 1 FROM subscription s
                WHERE s.domain = o.recipient_domain AND s.recipient = o.recipient
                  AND (s.sender = m.sender
                       OR s.sender = '*@' || split_part(m.sender, '@', 2)));

-- The rows where pending_match and the recomputation differ, each with
-- which side has it ('missing': expected, not pending; 'stale': pending,
-- not expected). Empty when the triggers did their work.
CREATE VIEW pending_match_diff AS
SELECT 'missing' AS what, * FROM
    (SELECT * FROM expected_pending_match
     EXCEPT SELECT domain, message_id, recipient FROM pending_match) e
UNION ALL
SELECT 'stale', * FROM
    (SELECT domain, message_id, recipient FROM pending_match
     EXCEPT SELECT * FROM expected_pending_match) s;

-- put_message(id, sender, recipients): a message as the milter stores it
-- (one message row, one outbox row per recipient, in one statement each).
CREATE FUNCTION put_message(p_id text, p_sender text, p_recipients text[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO message (id, sender, size, spool_name) VALUES (p_id, p_sender, 1, p_id);
    INSERT INTO outbox (message_id, recipient, recipient_domain)
    SELECT p_id, r, split_part(r, '@', 2) FROM unnest(p_recipients) AS r;
$$;

-- pairs_json(ARRAY[[sender, recipient], ...]): the JSON array of
-- {"sender", "recipient"} that subscription_change() takes.
CREATE FUNCTION pairs_json(p_pairs text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('sender', p_pairs[i][1],
                                                 'recipient', p_pairs[i][2])), '[]')
      FROM generate_subscripts(p_pairs, 1) AS i
$$;
