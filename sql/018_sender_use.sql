-- 018_sender_use.sql — each sender's use of the outbox kept as a counter,
-- so that the quota check of every store reads one row.
--
-- sql/011 counted the sender's waiting messages at every store: its cost
-- grew with what the sender had waiting (2.4 ms of database time for a
-- diverted message with an empty outbox, 10 ms with a thousand waiting,
-- and a sender with a large override paid for every message of it).
--
-- sender_use holds, per sender, the messages (and their octets) that
-- waiting_message lists; message.counted says whether a message is in its
-- sender's count. One function, sender_use_sync(), brings a message's flag
-- and its sender's counter in line with what the message is now (waiting:
-- its body kept and a recipient that has not retrieved it), under the
-- message row's lock: whatever changed it (a store, an ack, a batch of
-- acks, a recall, the janitor's expiry), and however many sessions at
-- once, the one that syncs last sees the others' commits and counts it
-- once. Triggers call it for every message whose outbox rows are inserted
-- or retrieved, or whose body is dropped; deleting a counted message takes
-- it out.
--
-- The sender_usage view (sql/011) still reads waiting_message itself: it
-- is the administrator's exact figure. sender_use_recount() rebuilds the
-- counters from it, for a database edited by hand.

CREATE TABLE sender_use (
    sender   text PRIMARY KEY,
    messages bigint NOT NULL DEFAULT 0,
    bytes    bigint NOT NULL DEFAULT 0
);

ALTER TABLE message ADD COLUMN counted boolean NOT NULL DEFAULT false;

CREATE FUNCTION sender_use_add(p_sender text, p_messages bigint, p_bytes bigint)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO sender_use (sender, messages, bytes) VALUES (p_sender, p_messages, p_bytes)
    ON CONFLICT (sender) DO UPDATE
       SET messages = sender_use.messages + excluded.messages,
           bytes = sender_use.bytes + excluded.bytes
$$;

-- Each statement of a plpgsql function takes its own snapshot (READ
-- COMMITTED): after the lock, the EXISTS sees what the sessions that held
-- it before committed.
CREATE FUNCTION sender_use_sync(p_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    waiting boolean;
BEGIN
    -- not the body: a small one is in the row
    SELECT sender, size, counted, body_deleted_at INTO m
      FROM message WHERE id = p_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    waiting := m.body_deleted_at IS NULL
               AND EXISTS (SELECT 1 FROM outbox o
                            WHERE o.message_id = p_id AND o.retrieved_at IS NULL);
    IF waiting <> m.counted THEN
        PERFORM sender_use_add(m.sender, CASE WHEN waiting THEN 1 ELSE -1 END,
                               CASE WHEN waiting THEN m.size ELSE -m.size END);
        UPDATE message SET counted = waiting WHERE id = p_id;
    END IF;
END $$;

CREATE FUNCTION sender_use_outbox_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    id text;
BEGIN
    FOR id IN SELECT DISTINCT message_id FROM new_outbox ORDER BY message_id LOOP
        PERFORM sender_use_sync(id);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION sender_use_outbox_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    id text;
BEGIN
    FOR id IN SELECT DISTINCT n.message_id
                FROM new_outbox n JOIN old_outbox o USING (message_id, recipient)
               WHERE o.retrieved_at IS NULL AND n.retrieved_at IS NOT NULL
               ORDER BY n.message_id LOOP
        PERFORM sender_use_sync(id);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION sender_use_body_dropped() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    id text;
BEGIN
    FOR id IN SELECT n.id FROM new_message n
               WHERE n.counted AND n.body_deleted_at IS NOT NULL ORDER BY n.id LOOP
        PERFORM sender_use_sync(id);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION sender_use_message_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.counted THEN
        PERFORM sender_use_add(OLD.sender, -1, -OLD.size);
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER sender_use_outbox_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION sender_use_outbox_insert();
CREATE TRIGGER sender_use_outbox_update AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_outbox NEW TABLE AS new_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION sender_use_outbox_update();
CREATE TRIGGER sender_use_body_dropped AFTER UPDATE ON message
    REFERENCING NEW TABLE AS new_message
    FOR EACH STATEMENT EXECUTE FUNCTION sender_use_body_dropped();
CREATE TRIGGER sender_use_message_delete BEFORE DELETE ON message
    FOR EACH ROW EXECUTE FUNCTION sender_use_message_delete();

-- The counters from scratch (run it with the outbox quiet: a store or an
-- ack committing meanwhile may be counted twice or not at all).
CREATE FUNCTION sender_use_recount() RETURNS void
LANGUAGE sql AS $$
    UPDATE message m SET counted = (m.id IN (SELECT id FROM waiting_message))
     WHERE m.counted <> (m.id IN (SELECT id FROM waiting_message));
    DELETE FROM sender_use;
    INSERT INTO sender_use (sender, messages, bytes)
    SELECT sender, count(*), coalesce(sum(size), 0) FROM waiting_message GROUP BY sender;
$$;
SELECT sender_use_recount();

-- sql/011's quota check, reading the counter.
CREATE OR REPLACE FUNCTION sender_quota_use(p_sender text, p_default_messages bigint,
                                            p_default_bytes bigint,
                                            OUT messages bigint, OUT bytes bigint,
                                            OUT max_messages bigint, OUT max_bytes bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT q.max_messages, q.max_bytes INTO max_messages, max_bytes
      FROM sender_quota q WHERE q.address = p_sender;
    max_messages := coalesce(max_messages, p_default_messages);
    max_bytes := coalesce(max_bytes, p_default_bytes);
    SELECT coalesce(u.messages, 0), coalesce(u.bytes, 0) INTO messages, bytes
      FROM (SELECT 1) one LEFT JOIN sender_use u ON u.sender = p_sender;
END $$;
