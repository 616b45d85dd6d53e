-- t-inline-body.sql — a message has exactly one stored body (sql/010): in its row (body, no spool_name) or in the spool (spool_name, no body); an acked inline body is NULL with body_deleted_at set; size is an inline body's length; outbox_store() stores an inline body and knows it again when sent twice

-- outbox_store with the body in the row
SELECT assert_eq(outbox_store('00000000000000000000000000000001', 'alice@a.example', 3, NULL,
                              'openpgp', ARRAY['bob@b.example'], ARRAY['b.example'], '{}', '{}',
                              '\x010203'::bytea),
                 true, 'inline body stored');
SELECT assert_eq((SELECT spool_name IS NULL AND body = '\x010203'::bytea AND size = 3
                    FROM message WHERE id = '00000000000000000000000000000001'),
                 true, 'the body in the row, no spool_name');
SELECT assert_eq(outbox_store('00000000000000000000000000000001', 'alice@a.example', 3, NULL,
                              'openpgp', ARRAY['bob@b.example'], ARRAY['b.example'], '{}', '{}',
                              '\x010203'::bytea),
                 false, 'inline body sent again: stored already');
SELECT assert_eq((SELECT count(*) FROM message), 1::bigint, 'nothing stored twice');

-- rows that break the rule are refused by the CHECKs
CREATE FUNCTION refused(p_sql text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE p_sql;
    RETURN false;
EXCEPTION WHEN check_violation THEN
    RETURN true;
END $$;
SELECT assert_true(refused($$INSERT INTO message (id, sender, size, spool_name, body)
    VALUES ('00000000000000000000000000000002', 'a@a.example', 1,
            '00000000000000000000000000000002', '\x01')$$), 'both a spool file and a body');
SELECT assert_true(refused($$INSERT INTO message (id, sender, size)
    VALUES ('00000000000000000000000000000003', 'a@a.example', 1)$$), 'neither');
SELECT assert_true(refused($$INSERT INTO message (id, sender, size, body)
    VALUES ('00000000000000000000000000000004', 'a@a.example', 2, '\x01')$$),
    'size is not the inline body''s length');
SELECT assert_true(refused($$UPDATE message SET body = NULL
    WHERE id = '00000000000000000000000000000001'$$), 'inline body dropped before it is deleted');
SELECT assert_true(refused($$UPDATE message SET spool_name = id
    WHERE id = '00000000000000000000000000000001'$$), 'a spool_name beside the body');

-- what mod_stubmail's ack does (STMT_ACKS_DONE): body gone, the row stays
UPDATE message SET body_deleted_at = now(), body = NULL
 WHERE id = '00000000000000000000000000000001';
SELECT assert_eq((SELECT body IS NULL AND body_deleted_at IS NOT NULL AND spool_name IS NULL
                    FROM message WHERE id = '00000000000000000000000000000001'),
                 true, 'acked inline body: NULL, body_deleted_at set');

-- a body in the spool, as before, and acked
INSERT INTO message (id, sender, size, spool_name)
VALUES ('00000000000000000000000000000005', 'a@a.example', 10, '00000000000000000000000000000005');
UPDATE message SET body_deleted_at = now(), body = NULL
 WHERE id = '00000000000000000000000000000005';
SELECT assert_eq((SELECT spool_name FROM message WHERE id = '00000000000000000000000000000005'),
                 '00000000000000000000000000000005', 'acked spool body keeps its name');
