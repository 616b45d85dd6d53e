-- t-quota.sql — outbox_store_quota() (sql/011) stores a message only when it fits its sender's quota (the default given, or sender_quota's override; 0 no limit), and a refused one leaves no row; mail retrieved by every recipient stops counting at once; a message sent again is never refused; sender_usage reports each sender's use; the store takes the sender's "quota" lock

-- store(id, sender, size, default messages, default bytes): outbox_store_quota
-- with one recipient (a body in the spool named id), as "stored refused
-- messages bytes max_messages max_bytes"
CREATE FUNCTION store(p_id text, p_sender text, p_size bigint, p_msgs bigint, p_bytes bigint)
RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', stored, refused, coalesce(messages::text, '-'),
                     coalesce(bytes::text, '-'), max_messages, max_bytes)
      FROM outbox_store_quota(md5(p_id), p_sender, p_size, md5(p_id), 'openpgp',
                              ARRAY['bob@b.example', 'carol@c.example'],
                              ARRAY['b.example', 'c.example'], '{}', '{}', NULL,
                              p_msgs, p_bytes)
$$;

-- the default quota: 2 messages, 1000 octets
SELECT assert_eq(store('a1', 'alice@a.example', 400, 2, 1000), 't f 0 0 2 1000', 'first');
SELECT assert_eq(store('a2', 'alice@a.example', 500, 2, 1000), 't f 1 400 2 1000',
                 'second: 900 of 1000 octets');
SELECT assert_eq(store('a3', 'alice@a.example', 1, 2, 1000), 'f t 2 900 2 1000',
                 'third: over 2 messages');
SELECT assert_eq((SELECT count(*) FROM message WHERE id = md5('a3')), 0::bigint,
                 'the refused message has no row');
SELECT assert_eq((SELECT count(*) FROM outbox WHERE message_id = md5('a3')), 0::bigint,
                 'nor outbox rows');

-- octets: 900 waiting, 101 more is over 1000; 100 fits (with no message limit)
SELECT assert_eq(store('a4', 'alice@a.example', 101, 0, 1000), 'f t 2 900 0 1000',
                 'over 1000 octets');
SELECT assert_eq(store('a5', 'alice@a.example', 100, 0, 1000), 't f 2 900 0 1000',
                 'exactly 1000 octets fits');

-- no limit at all: stored, the use said all the same (sql/018: one row)
SELECT assert_eq(store('a6', 'alice@a.example', 10000, 0, 0), 't f 3 1000 0 0', 'no limit');

-- sent again after a broken connection: never refused, never doubled
SELECT assert_eq(store('a5', 'alice@a.example', 100, 1, 1), 'f f 4 11000 1 1',
                 'a message sent again');

-- another sender has its own use
SELECT assert_eq(store('b1', 'bob@a.example', 100, 1, 0), 't f 0 0 1 0', 'bob');

-- sender_usage: alice has 4 messages, 11000 octets; bob 1, 100
SELECT assert_eq((SELECT string_agg(concat_ws(' ', sender, messages, bytes, oldest IS NOT NULL,
                                              coalesce(max_messages::text, '-'),
                                              coalesce(max_bytes::text, '-')), ', '
                                    ORDER BY sender) FROM sender_usage),
                 'alice@a.example 4 11000 t - -, bob@a.example 1 100 t - -',
                 'sender_usage');

-- retrieved by one recipient: still waiting for the other; by both: no more
UPDATE outbox SET retrieved_at = now() WHERE message_id = md5('a6') AND recipient = 'bob@b.example';
SELECT assert_eq((SELECT bytes FROM sender_usage WHERE sender = 'alice@a.example'), 11000::bigint,
                 'one recipient of two retrieved: still counts');
UPDATE outbox SET retrieved_at = now() WHERE message_id = md5('a6');
SELECT assert_eq((SELECT messages || ' ' || bytes FROM sender_usage
                   WHERE sender = 'alice@a.example'), '3 1000',
                 'retrieved by every recipient: stops counting, before its body is dropped');
-- a body dropped (body_deleted_at) while a row is still pending: not kept, not counted
UPDATE message SET body_deleted_at = now() WHERE id = md5('a5');
SELECT assert_eq((SELECT messages || ' ' || bytes FROM sender_usage
                   WHERE sender = 'alice@a.example'), '2 900', 'a dropped body does not count');

-- the per-user override: NULL keeps the default, a value replaces it, 0 lifts it
INSERT INTO sender_quota (address, max_messages, max_bytes) VALUES ('alice@a.example', 3, NULL);
SELECT assert_eq(store('a7', 'alice@a.example', 100, 2, 1000), 't f 2 900 3 1000',
                 'override: 3 messages, the default 1000 octets');
SELECT assert_eq(store('a8', 'alice@a.example', 100, 2, 5000), 'f t 3 1000 3 5000',
                 'override: a fourth message is over');
UPDATE sender_quota SET max_messages = 0, max_bytes = 1100 WHERE address = 'alice@a.example';
SELECT assert_eq(store('a8', 'alice@a.example', 100, 2, 1000), 't f 3 1000 0 1100',
                 'override: no message limit, 1100 octets');
SELECT assert_eq((SELECT concat_ws(' ', messages, bytes, max_messages, max_bytes)
                    FROM sender_usage WHERE sender = 'alice@a.example'), '4 1100 0 1100',
                 'sender_usage names the override');
INSERT INTO sender_quota (address, max_messages) VALUES ('idle@a.example', 5);
SELECT assert_eq((SELECT concat_ws(' ', messages, bytes, oldest IS NULL, max_messages)
                    FROM sender_usage WHERE sender = 'idle@a.example'), '0 0 t 5',
                 'sender_usage lists an override without mail');

-- sender_quota takes addresses as the milter stores them
DO $$
BEGIN
    INSERT INTO sender_quota (address, max_messages) VALUES ('Alice@A.example', 1);
    RAISE EXCEPTION 'sender_quota took an address that is not lowercase';
EXCEPTION WHEN check_violation THEN
    NULL;
END $$;

-- the store holds the sender's "quota" lock to its commit (what keeps two
-- sessions from both slipping under the quota: the second waits, then
-- counts the first's message)
SELECT assert_eq(stubmail_lock_class('quota'), 7239034, 'the quota lock class');
BEGIN;
SELECT store('c1', 'carol@a.example', 1, 5, 0);
SELECT assert_eq((SELECT string_agg(l.mode, ' ') FROM pg_locks l
                   WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid()
                     AND l.classid = stubmail_lock_class('quota')::oid
                     AND l.objid = (hashtext('carol@a.example')::bigint & 4294967295)::oid
                     AND l.objsubid = 2), 'ExclusiveLock',
                 'the store locks its sender until the commit');
COMMIT;
