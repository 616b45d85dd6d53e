-- t-sender-use.sql — 400 random stores, acks, recalls, body drops and deletes: sender_use (sql/018) always equals its recomputation from waiting_message
--
-- One session, so this checks what each trigger does; the race of two
-- sessions acking the last two recipients of one message is
-- tests/integration/test_quota.py's concurrent store and the lock in
-- sender_use_sync(). An error names the operation and the counters.
CREATE FUNCTION use_now() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(sender || '=' || messages || '/' || bytes, ' ' ORDER BY sender), '')
      FROM sender_use WHERE messages <> 0 OR bytes <> 0
$$;
CREATE FUNCTION use_recomputed() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(sender || '=' || n || '/' || b, ' ' ORDER BY sender), '')
      FROM (SELECT sender, count(*) AS n, sum(size) AS b FROM waiting_message GROUP BY sender) w
$$;

DO $$
DECLARE
    senders text[] := ARRAY['alice@a.example', 'bob@a.example', 'carol@a.example'];
    recipients text[] := ARRAY['r1@c.example', 'r2@c.example', 's1@d.example'];
    op text;
    mid text;
    k int := 0;
    rcpts text[];
BEGIN
    PERFORM setseed(0.18);
    FOR i IN 1 .. 400 LOOP
        op := (ARRAY['store', 'store', 'ack', 'ack', 'recall', 'drop', 'delete', 'ack_all'])
              [1 + floor(random() * 8)::int];
        SELECT m.id INTO mid FROM message m ORDER BY random() LIMIT 1;
        IF op = 'store' OR mid IS NULL THEN
            k := k + 1;
            op := 'store';
            mid := lpad(to_hex(k), 32, '0');
            rcpts := recipients[1:1 + floor(random() * 3)::int];
            PERFORM outbox_store(mid, senders[1 + floor(random() * 3)::int],
                                 (100 + floor(random() * 900))::bigint, mid, 'openpgp', rcpts,
                                 ARRAY(SELECT split_part(r, '@', 2) FROM unnest(rcpts) r),
                                 ARRAY[]::text[], ARRAY[]::text[], NULL);
        ELSIF op = 'ack' THEN
            UPDATE outbox SET retrieved_at = now()
             WHERE (message_id, recipient) IN (SELECT message_id, recipient FROM outbox
                                                WHERE message_id = mid AND retrieved_at IS NULL
                                                LIMIT 1);
        ELSIF op = 'ack_all' THEN
            UPDATE outbox SET retrieved_at = now() WHERE retrieved_at IS NULL
               AND message_id IN (SELECT message_id FROM outbox ORDER BY random() LIMIT 5);
        ELSIF op = 'recall' THEN
            PERFORM message_recall((SELECT sender FROM message WHERE message.id = mid), mid);
        ELSIF op = 'drop' THEN
            UPDATE message SET body_deleted_at = now() WHERE message.id = mid;
        ELSE
            DELETE FROM message WHERE message.id = mid;
        END IF;
        IF use_now() <> use_recomputed() THEN
            RAISE EXCEPTION 'after operation % (%) on %: sender_use says "%", waiting_message "%"',
                i, op, mid, use_now(), use_recomputed();
        END IF;
    END LOOP;
END $$;

SELECT assert_true((SELECT count(*) FROM message) > 20, 'the run kept messages around');
SELECT assert_true(use_now() <> '', 'and some waiting');
