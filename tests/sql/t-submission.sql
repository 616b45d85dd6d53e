-- t-submission.sql — outbox_store_quota() (sql/021) stores a message once per submission identity and sender: a retry under a new id within submission_window() is answered with the stored copy's id and stores nothing; another sender's identical submission is its own; a resend after the window is stored and takes the identity over; a message without one is stored every time; the constraint holds without the function

-- store(id, sender, submission): outbox_store_quota with one recipient (a
-- body in the spool named id), as "stored refused retry_of"
CREATE FUNCTION store(p_id text, p_sender text, p_submission bytea)
RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', stored, refused, coalesce(retry_of, '-'))
      FROM outbox_store_quota(md5(p_id), p_sender, 100, md5(p_id), 'openpgp',
                              ARRAY['bob@b.example'], ARRAY['b.example'], '{}', '{}', NULL,
                              1000, 0, NULL, NULL, NULL, NULL, p_submission)
$$;

SELECT assert_eq(store('m1', 'alice@a.example', sha256('one')), 't f -', 'first attempt stored');
SELECT assert_eq(store('m1', 'alice@a.example', sha256('one')), 'f f -',
                 'the same call again (broken connection): stored already, not a retry');
SELECT assert_eq(store('m2', 'alice@a.example', sha256('one')), 'f f ' || md5('m1'),
                 'a retry under a new id: the first copy''s id');
SELECT assert_eq((SELECT count(*) FROM message WHERE id = md5('m2')), 0::bigint,
                 'the retry has no message row');
SELECT assert_eq((SELECT count(*) FROM outbox WHERE message_id = md5('m2')), 0::bigint,
                 'nor outbox rows');
SELECT assert_eq(store('m3', 'mallory@a.example', sha256('one')), 't f -',
                 'another sender''s identical submission is stored');
SELECT assert_eq(store('m4', 'alice@a.example', NULL), 't f -', 'no identity: stored');
SELECT assert_eq(store('m5', 'alice@a.example', NULL), 't f -', 'no identity: stored again');

-- a retry over the quota is still the stored copy, not a refusal
INSERT INTO sender_quota (address, max_messages, max_bytes) VALUES ('alice@a.example', 1, 0);
SELECT assert_eq(store('m6', 'alice@a.example', sha256('one')), 'f f ' || md5('m1'),
                 'a retry is never refused');
SELECT assert_eq(store('m7', 'alice@a.example', sha256('two')), 'f t -',
                 'a new message over the quota is');
DELETE FROM sender_quota;

-- after the window the same submission is a resend: stored, the old copy
-- lets go of the identity
UPDATE message SET created_at = now() - submission_window() - interval '1 s'
 WHERE id = md5('m1');
SELECT assert_eq(store('m8', 'alice@a.example', sha256('one')), 't f -',
                 'a resend after the window is stored');
SELECT assert_eq((SELECT submission FROM message WHERE id = md5('m1')), NULL::bytea,
                 'the old copy gave up its identity');
SELECT assert_eq(store('m9', 'alice@a.example', sha256('one')), 'f f ' || md5('m8'),
                 'a retry of the resend finds the resend');

-- the constraint, whatever writes the rows
DO $$
BEGIN
    INSERT INTO message (id, sender, size, spool_name, format, submission)
    VALUES (md5('x1'), 'alice@a.example', 1, md5('x1'), 'openpgp', sha256('one'));
    RAISE EXCEPTION 'a second row of one sender''s submission was taken';
EXCEPTION WHEN unique_violation THEN
    NULL;
END $$;
