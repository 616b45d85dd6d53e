-- 009_outbox_store.sql — a diverted message stored by one statement, and
-- discovery's reads of a domain in one.
--
-- stubmail-milter stored a message with BEGIN, INSERT message, INSERT
-- outbox, INSERT address_book and COMMIT: five round trips to the server,
-- each statement parsed and planned again. outbox_store() does the same
-- work in one call (plpgsql keeps its plans per connection), in the
-- caller's transaction or, called alone, in one of its own: all of it
-- commits or none (docs/BENCHMARKS.md, "The cost of a diverted message").
--
-- The outbox INSERT fires sql/004's pending_match trigger as before (the
-- shared "subscription" lock of each recipient domain, held to the end of
-- the transaction, then the matching pending_match rows and their NOTIFY).
--
-- Sent again, it stores nothing twice: a connection that breaks after the
-- call was sent leaves the caller not knowing whether it committed, and
-- the same call on a fresh connection finds the message it stored (same
-- id, sender and spool name) and returns false instead of true. The ids
-- are 128 random bits: another message under the same id is an error.

CREATE FUNCTION outbox_store(p_id text, p_sender text, p_size bigint, p_spool_name text,
                             p_format text, p_recipients text[], p_recipient_domains text[],
                             p_contacts text[], p_contact_domains text[])
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message (id, sender, size, spool_name, format)
    VALUES (p_id, p_sender, p_size, p_spool_name, p_format)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM 1 FROM message
         WHERE id = p_id AND sender = p_sender AND spool_name = p_spool_name;
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

-- Discovery's two reads of one domain in one call (lib/sm_discover_pq.c):
-- the admin's peer row (peer_found false without one) and the unexpired
-- cached verdict (status NULL without one). A statement sent by itself is
-- planned again each time; the plans of a plpgsql function are kept for the
-- connection, and planning the join of the two was a sixth of the
-- server's CPU per diverted message.
CREATE FUNCTION discovery_get(p_domain text,
                              OUT peer_found boolean, OUT peer_outbox_url text,
                              OUT peer_fpr text, OUT peer_pulling boolean,
                              OUT status text, OUT outbox text, OUT udp text, OUT fpr text,
                              OUT policy text, OUT why text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT true, p.outbox_url, p.fpr, p.pulling
      INTO peer_found, peer_outbox_url, peer_fpr, peer_pulling
      FROM peer p WHERE p.domain = p_domain;
    peer_found := coalesce(peer_found, false);
    SELECT c.status, c.outbox, c.udp, c.fpr, c.policy, c.why
      INTO status, outbox, udp, fpr, policy, why
      FROM dns_cache_get(p_domain) c;
END $$;
