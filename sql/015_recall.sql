-- 015_recall.sql — a sender withdraws a message from the recipients whose
-- ISP has not fetched it yet (the user's page, "Sent mail").
--
-- A recalled recipient is done with the message the way an acked one is:
-- retrieved_at is set, so everything that waits for unretrieved mail lets
-- go in the same commit (the polls and their ETags through pending_match's
-- trigger, which notifies the poll caches; the fetch, which answers 404;
-- the sender's quota; expiry, which has nothing left to bounce), and
-- recalled_at says it was the sender's doing. Recipients who fetched it
-- already keep it. A poller that fetched the body just before the recall
-- and acks just after is believed (the ack records the retrieval and
-- clears recalled_at): the mail did reach that recipient.
ALTER TABLE outbox ADD COLUMN recalled_at timestamptz;

-- One statement. Another sender's message, or one every recipient has
-- fetched, recalls nothing. The body goes with the last waiting recipient
-- (a file of it is then the janitor's: no live row names it).
CREATE FUNCTION message_recall(p_sender text, p_id text,
                               OUT recalled bigint, OUT kept bigint, OUT sent_at timestamptz)
LANGUAGE sql AS $$
    WITH msg AS (
        SELECT id, created_at FROM message WHERE id = p_id AND sender = p_sender),
    r AS (
        UPDATE outbox o SET retrieved_at = now(), recalled_at = now()
          FROM msg WHERE o.message_id = msg.id AND o.retrieved_at IS NULL
        RETURNING o.recipient),
    body AS (
        UPDATE message m SET body_deleted_at = now(), body = NULL
          FROM msg WHERE m.id = msg.id AND m.body_deleted_at IS NULL
           AND EXISTS (SELECT 1 FROM r)
        RETURNING 1)
    -- the outbox as it was before r: what was fetched then is kept
    SELECT (SELECT count(*) FROM r),
           (SELECT count(*) FROM outbox o JOIN msg ON o.message_id = msg.id
             WHERE o.retrieved_at IS NOT NULL),
           (SELECT created_at FROM msg)
$$;
