-- 020_receipt.sql — proof-of-receipt acks (docs/PROTOCOL.md "Receipts").
--
-- A bearer token may leak. So that an ack proves its sender could read the
-- message, the milter seals a random receipt secret into each message (the
-- OpenPGP literal data's file name, which only the recipients' keys reveal)
-- and stores only its SHA-256 here, on every outbox row of the message;
-- mod_stubmail compares the hash of the receipt an ack carries with it in
-- constant time. NULL: stored before this migration (or by an older
-- milter), acked without a receipt as before.
ALTER TABLE outbox ADD COLUMN receipt_hash bytea
    CHECK (receipt_hash IS NULL OR octet_length(receipt_hash) = 32);

-- The receiver's side: the receipt pollerd found in the body, kept with
-- the delivery record until the ack went out (a restart acks from here).
-- NULL: none found (an older outbox, or a body it could not open).
ALTER TABLE received ADD COLUMN receipt text;

-- outbox_store (sql/016) with the receipt's hash for every outbox row.
-- Without it (NULL, the default) it stores as sql/016's did.
DROP FUNCTION outbox_store(text, text, bigint, text, text, text[], text[], text[], text[], bytea,
                           text[], text[], text);
CREATE FUNCTION outbox_store(p_id text, p_sender text, p_size bigint, p_spool_name text,
                             p_format text, p_recipients text[], p_recipient_domains text[],
                             p_contacts text[], p_contact_domains text[], p_body bytea,
                             p_notify text[] DEFAULT NULL, p_orcpt text[] DEFAULT NULL,
                             p_envid text DEFAULT NULL, p_receipt_hash bytea DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message (id, sender, size, spool_name, format, body, dsn_envid)
    VALUES (p_id, p_sender, p_size, p_spool_name, p_format, p_body, nullif(p_envid, ''))
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
    INSERT INTO outbox (message_id, recipient, recipient_domain, dsn_notify, dsn_orcpt,
                        receipt_hash)
    SELECT p_id, r, d, string_to_array(nullif(n, ''), ','), nullif(oc, ''), p_receipt_hash
      FROM unnest(p_recipients, p_recipient_domains,
                  coalesce(p_notify, '{}'::text[]), coalesce(p_orcpt, '{}'::text[]))
           AS t(r, d, n, oc)
     WHERE r IS NOT NULL
    ON CONFLICT DO NOTHING;
    -- sorted, so that concurrent learners take row locks in the same order
    INSERT INTO address_book (owner, contact, contact_domain)
    SELECT p_sender, c, d FROM unnest(p_contacts, p_contact_domains) AS t(c, d) ORDER BY c
    ON CONFLICT DO NOTHING;
    RETURN true;
END $$;

-- outbox_store_quota (sql/016) passing it on; called as before (15
-- arguments) it stores without a receipt.
DROP FUNCTION outbox_store_quota(text, text, bigint, text, text, text[], text[], text[],
                                 text[], bytea, bigint, bigint, text[], text[], text);
CREATE FUNCTION outbox_store_quota(p_id text, p_sender text, p_size bigint, p_spool_name text,
                                   p_format text, p_recipients text[],
                                   p_recipient_domains text[], p_contacts text[],
                                   p_contact_domains text[], p_body bytea,
                                   p_default_messages bigint, p_default_bytes bigint,
                                   p_notify text[] DEFAULT NULL, p_orcpt text[] DEFAULT NULL,
                                   p_envid text DEFAULT NULL, p_receipt_hash bytea DEFAULT NULL,
                                   OUT stored boolean, OUT refused boolean,
                                   OUT messages bigint, OUT bytes bigint,
                                   OUT max_messages bigint, OUT max_bytes bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(stubmail_lock_class('quota'), hashtext(p_sender));
    SELECT u.messages, u.bytes, u.max_messages, u.max_bytes
      INTO messages, bytes, max_messages, max_bytes
      FROM sender_quota_use(p_sender, p_default_messages, p_default_bytes) u;
    refused := NOT EXISTS (SELECT 1 FROM message WHERE id = p_id)
               AND ((max_messages > 0 AND messages + 1 > max_messages)
                    OR (max_bytes > 0 AND bytes + p_size > max_bytes));
    stored := false;
    IF NOT refused THEN
        stored := outbox_store(p_id, p_sender, p_size, p_spool_name, p_format, p_recipients,
                               p_recipient_domains, p_contacts, p_contact_domains, p_body,
                               p_notify, p_orcpt, p_envid, p_receipt_hash);
    END IF;
END $$;
