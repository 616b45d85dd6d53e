-- t-receipt.sql — sql/020: outbox_store_quota() keeps the receipt's SHA-256 on every outbox row of the message, and called as before (15 arguments) stores none (NULL: acked without a receipt); the CHECK refuses a hash that is not 32 octets; received keeps the receiver's receipt

SELECT assert_eq((SELECT row(stored, refused)::text
                    FROM outbox_store_quota(md5('r1'), 'alice@a.example', 1, NULL, 'openpgp',
                         ARRAY['bob@b.example', 'carol@b.example', 'dave@c.example'],
                         ARRAY['b.example', 'b.example', 'c.example'],
                         '{}', '{}', '\x00'::bytea, 0, 0, NULL, NULL, NULL,
                         sha256('Yj7kQ2mP0vXc9sLw4HnT8rAe1uZo6dFg3bKi5yNq2Wc'))),
                 '(t,f)', 'stored with a receipt hash');
SELECT assert_eq((SELECT count(*) FROM outbox
                   WHERE message_id = md5('r1')
                     AND receipt_hash = sha256('Yj7kQ2mP0vXc9sLw4HnT8rAe1uZo6dFg3bKi5yNq2Wc')),
                 3::bigint, 'every recipient row, of every domain, has the hash');

SELECT assert_eq((SELECT stored FROM outbox_store_quota(md5('r2'), 'alice@a.example', 1, NULL,
                         'openpgp', ARRAY['bob@b.example'], ARRAY['b.example'], '{}', '{}',
                         '\x00'::bytea, 0, 0, NULL, NULL, NULL)),
                 true, 'called as before sql/020');
SELECT assert_eq((SELECT count(*) FROM outbox
                   WHERE message_id = md5('r2') AND receipt_hash IS NULL),
                 1::bigint, 'no hash: acked without a receipt');

DO $$
BEGIN
    UPDATE outbox SET receipt_hash = '\x00'::bytea WHERE message_id = md5('r2');
    RAISE EXCEPTION 'a 1-octet hash was taken';
EXCEPTION WHEN check_violation THEN
    NULL;
END $$;

INSERT INTO received (remote_domain, message_id, recipient, sender, receipt)
VALUES ('a.example', md5('r1'), 'bob@b.example', 'alice@a.example',
        'Yj7kQ2mP0vXc9sLw4HnT8rAe1uZo6dFg3bKi5yNq2Wc');
SELECT assert_eq((SELECT receipt FROM received WHERE message_id = md5('r1')),
                 'Yj7kQ2mP0vXc9sLw4HnT8rAe1uZo6dFg3bKi5yNq2Wc', 'received keeps the receipt');
