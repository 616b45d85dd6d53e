-- 023_body_dropped_row.sql — the sender_use counter (sql/018) watches
-- only the updates of message that drop a counted message's body.
--
-- sql/018's trigger ran a plpgsql function with a transition table at the
-- end of every UPDATE of message: the store's own flag update (counted),
-- the janitor's notice marks, a recall. A row trigger on the column, with
-- its condition in the trigger (evaluated without calling any function),
-- fires only where a body is dropped from a counted message; the store's
-- update of counted, which does not name body_deleted_at, fires nothing.
-- (A statement trigger cannot have both a column list and a transition
-- table.) The row is already locked by the dropping statement, so
-- sender_use_sync's lock adds no wait and no new lock order.

DROP TRIGGER sender_use_body_dropped ON message;
DROP FUNCTION sender_use_body_dropped();

CREATE FUNCTION sender_use_body_dropped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sender_use_sync(NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER sender_use_body_dropped AFTER UPDATE OF body_deleted_at ON message
    FOR EACH ROW
    WHEN (NEW.counted AND OLD.body_deleted_at IS NULL AND NEW.body_deleted_at IS NOT NULL)
    EXECUTE FUNCTION sender_use_body_dropped();
