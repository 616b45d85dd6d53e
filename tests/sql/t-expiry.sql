-- t-expiry.sql — an expired match leaves the poll's ETag at once, and says until when an ETag holds
SELECT subscription_change('c.example', true, NULL,
                           pairs_json(ARRAY[['*@a.example', 'r@c.example']]), '[]');

-- the lifetime: the session's stubmail.expire_after, else 100 days
SELECT assert_eq(outbox_lifetime(), interval '100 days', 'default lifetime');
SET stubmail.expire_after = '3600 s';
SELECT assert_eq(outbox_lifetime(), interval '1 hour', 'the session''s lifetime');
SELECT put_message(md5('1'), 'alice@a.example', ARRAY['r@c.example']);
SELECT assert_eq((SELECT expires_at - created_at FROM message WHERE id = md5('1')),
                 interval '1 hour', 'stored with the session''s lifetime');
RESET stubmail.expire_after;
SELECT put_message(md5('2'), 'alice@a.example', ARRAY['r@c.example']);
SELECT assert_eq((SELECT expires_at - created_at FROM message WHERE id = md5('2')),
                 interval '100 days', 'stored with the default');

-- each match carries its message's expiry, from the outbox trigger and
-- from a subscription's backfill alike
SELECT assert_eq((SELECT count(*) FROM pending_match p JOIN message m ON m.id = p.message_id
                   WHERE p.expires_at = m.expires_at), 2::bigint, 'matches carry the expiry');
SELECT subscription_change('c.example', true, NULL,
                           pairs_json(ARRAY[['alice@a.example', 'r@c.example']]), '[]');
SELECT assert_eq((SELECT count(*) FROM pending_match p JOIN message m ON m.id = p.message_id
                   WHERE p.expires_at = m.expires_at), 2::bigint, 'backfilled with the expiry');
SELECT assert_eq((SELECT count(*) FROM pending_match_diff), 0::bigint, 'pending_match exact');

CREATE TEMP TABLE before AS SELECT * FROM poll_etag_until('c.example');
SELECT assert_eq((SELECT valid_until_ms FROM before),
                 (SELECT floor(extract(epoch FROM expires_at) * 1000)::bigint
                    FROM message WHERE id = md5('1')),
                 'valid until the first expiry');
SELECT assert_eq(poll_etag('c.example'), (SELECT etag FROM before), 'poll_etag is the same');

-- message 1 expires: without any row deleted, the ETag changes and no
-- longer counts it, and the next expiry is message 2's
UPDATE message SET expires_at = now() - interval '1 s' WHERE id = md5('1');
UPDATE pending_match SET expires_at = now() - interval '1 s' WHERE message_id = md5('1');
SELECT assert_true(poll_etag('c.example') <> (SELECT etag FROM before), 'ETag changed');
SELECT assert_true(poll_etag('c.example') LIKE '"%.1.%', 'one match counted');
SELECT assert_eq((SELECT valid_until_ms FROM poll_etag_until('c.example')),
                 (SELECT floor(extract(epoch FROM expires_at) * 1000)::bigint
                    FROM message WHERE id = md5('2')),
                 'valid until the next expiry');

-- nothing left that expires: NULL
UPDATE pending_match SET expires_at = now() - interval '1 s';
SELECT assert_eq((SELECT valid_until_ms FROM poll_etag_until('c.example')), NULL::bigint,
                 'no expiry ahead');
SELECT assert_true(poll_etag('c.example') LIKE '"%.0.0.%', 'nothing counted');

-- a bad session value is an error, not a message that never expires
SET stubmail.expire_after = 'soon';
DO $$
BEGIN
    PERFORM put_message(md5('3'), 'alice@a.example', ARRAY['r@c.example']);
    RAISE EXCEPTION 'stored with stubmail.expire_after = soon';
EXCEPTION WHEN invalid_datetime_format THEN
    NULL;
END $$;
