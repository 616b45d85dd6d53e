-- 010_inline_body.sql — a small sealed body is kept in its message row.
--
-- A body in a spool file cost the milter a file created, written, fsync'd,
-- renamed and its directory fsync'd before the row committed (with
-- PostgreSQL's own WAL flush after it): about 1 ms of machine CPU a
-- message (docs/BENCHMARKS.md, "Small bodies in the row"). A body of at
-- most the milter's inline_max octets (default 96 KiB; most mail) now rides
-- in the row's INSERT instead and is durable by the commit's one WAL flush.
-- A bigger one keeps its spool file as before.
--
-- A message has exactly one stored body: in the row (body, no spool_name)
-- or in the spool (spool_name, no body). Once every recipient acked,
-- mod_stubmail sets body_deleted_at and drops the body: an inline body
-- becomes NULL, a spool file is removed and its name stays. size is the
-- stored body's length, which the poll lists and the fetch serves.

ALTER TABLE message ALTER COLUMN spool_name DROP NOT NULL;
ALTER TABLE message ADD COLUMN body bytea;
ALTER TABLE message ADD CONSTRAINT message_one_body CHECK (
    CASE WHEN spool_name IS NOT NULL THEN body IS NULL
         ELSE body IS NOT NULL OR body_deleted_at IS NOT NULL END);
ALTER TABLE message ADD CONSTRAINT message_inline_size CHECK (
    body IS NULL OR size = octet_length(body));

-- outbox_store (sql/009) with the body: p_body for an inline one (then
-- p_spool_name NULL), NULL for one in the spool. Sent again after a broken
-- connection, it recognises its message by id, sender and where the body
-- is (spool_name, or NULL for a row's body) as before.
DROP FUNCTION outbox_store(text, text, bigint, text, text, text[], text[], text[], text[]);
CREATE FUNCTION outbox_store(p_id text, p_sender text, p_size bigint, p_spool_name text,
                             p_format text, p_recipients text[], p_recipient_domains text[],
                             p_contacts text[], p_contact_domains text[], p_body bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message (id, sender, size, spool_name, format, body)
    VALUES (p_id, p_sender, p_size, p_spool_name, p_format, p_body)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM 1 FROM message
         WHERE id = p_id AND sender = p_sender
           AND spool_name IS NOT DISTINCT FROM p_spool_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'outbox_store: message id % is another message''s', p_id;
        END IF;
        RETURN false;
    END IF;
    INSERT INTO outbox (message_id, recipient, recipient_domain)
    SELECT p_id, r, d FROM unnest(p_recipients, p_recipient_domains) AS t(r, d)
    ON CONFLICT DO NOTHING;
    -- sorted, so that concurrent learners take row locks in the same order
    INSERT INTO address_book (owner, contact, contact_domain)
    SELECT p_sender, c, d FROM unnest(p_contacts, p_contact_domains) AS t(c, d) ORDER BY c
    ON CONFLICT DO NOTHING;
    RETURN true;
END $$;
