-- t-outbox-store.sql — outbox_store() (sql/009, sql/010) stores a diverted message in one call: the message, its outbox rows with their pending_match rows, the learned contacts; the same call again stores nothing twice; another message under a used id is an error

SELECT ok FROM subscription_change('b.example', true, NULL,
       '[{"sender": "alice@a.example", "recipient": "bob@b.example"}]'::jsonb, NULL);

SELECT assert_eq(outbox_store('00000000000000000000000000000001', 'alice@a.example', 1234,
                              '00000000000000000000000000000001', 'openpgp',
                              ARRAY['bob@b.example', 'carol@b.example', 'dave@c.example'],
                              ARRAY['b.example', 'b.example', 'c.example'],
                              ARRAY['bob@b.example', 'carol@b.example', 'dave@c.example',
                                    'erin@d.example'],
                              ARRAY['b.example', 'b.example', 'c.example', 'd.example'], NULL),
                 true, 'first call stores');
SELECT assert_eq((SELECT sender || ' ' || size || ' ' || spool_name || ' ' || format
                    FROM message WHERE id = '00000000000000000000000000000001'),
                 'alice@a.example 1234 00000000000000000000000000000001 openpgp', 'message row');
SELECT assert_eq((SELECT string_agg(recipient || '/' || recipient_domain, ' ' ORDER BY recipient)
                    FROM outbox WHERE message_id = '00000000000000000000000000000001'),
                 'bob@b.example/b.example carol@b.example/b.example dave@c.example/c.example',
                 'outbox rows');
SELECT assert_eq((SELECT string_agg(contact || '/' || contact_domain, ' ' ORDER BY contact)
                    FROM address_book WHERE owner = 'alice@a.example'),
                 'bob@b.example/b.example carol@b.example/b.example dave@c.example/c.example '
                 'erin@d.example/d.example', 'contacts learned');
-- the trigger of sql/004 ran: bob's pair matches, nobody else's
SELECT assert_eq((SELECT string_agg(domain || ' ' || recipient, ', ') FROM pending_match),
                 'b.example bob@b.example', 'pending_match');
SELECT assert_eq((SELECT count(*) FROM pending_match_diff), 0::bigint, 'pending_match as expected');

-- sent again (the connection broke before the answer): false, nothing doubled
SELECT assert_eq(outbox_store('00000000000000000000000000000001', 'alice@a.example', 1234,
                              '00000000000000000000000000000001', 'openpgp',
                              ARRAY['bob@b.example'], ARRAY['b.example'],
                              ARRAY['zed@z.example'], ARRAY['z.example'], NULL),
                 false, 'second call: stored already');
SELECT assert_eq((SELECT count(*) FROM outbox), 3::bigint, 'no outbox row added');
SELECT assert_eq((SELECT count(*) FROM address_book), 4::bigint, 'no contact added');
SELECT assert_eq((SELECT count(*) FROM pending_match), 1::bigint, 'no pending_match added');

-- no contacts at all is fine
SELECT assert_eq(outbox_store('00000000000000000000000000000002', 'frank@a.example', 10,
                              '00000000000000000000000000000002', 'openpgp',
                              ARRAY['bob@b.example'], ARRAY['b.example'], '{}', '{}', NULL),
                 true, 'no contacts');

-- the same id for another message is an error, and nothing of it is stored
DO $$
BEGIN
    PERFORM outbox_store('00000000000000000000000000000001', 'mallory@a.example', 1,
                         '00000000000000000000000000000001', 'openpgp',
                         ARRAY['bob@b.example'], ARRAY['b.example'],
                         ARRAY['bob@b.example'], ARRAY['b.example'], NULL);
    RAISE EXCEPTION 'outbox_store took another message under a used id';
EXCEPTION WHEN raise_exception THEN
    IF SQLERRM NOT LIKE 'outbox_store: message id % is another message''s' THEN
        RAISE;
    END IF;
END $$;
SELECT assert_eq((SELECT count(*) FROM address_book WHERE owner = 'mallory@a.example'), 0::bigint,
                 'nothing of the other message stored');
