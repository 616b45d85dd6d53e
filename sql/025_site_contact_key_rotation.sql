-- 025_site_contact_key_rotation.sql — site-wide contacts: senders every local user
-- pulls from without having written to them (a bank's or an airline's
-- notification address, or *@ its domain); and, at the end, a key
-- rotation's second key in the DNS cache.
--
-- address_book is per user and learned from what the user sends; a
-- notification domain is never written to, so its mail would wait unpulled
-- for every user. A site_contact row stands for an address-book entry of
-- every local user of the domains this database serves: pollerd subscribes
-- the pair (contact, user) for each user that has an address book (the
-- same "real local user" rule introductions use, sql/005), except users
-- who unsubscribed from that sender (address_block, sql/014). Managed with
-- `stubmailctl book site add|remove|list`.
CREATE TABLE site_contact (
    contact        text PRIMARY KEY,        -- normalised address or *@domain
    contact_domain text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (contact_domain = split_part(contact, '@', 2) AND contact_domain <> '')
);
CREATE INDEX site_contact_by_domain ON site_contact (contact_domain);

-- A key rotation's second key (docs/PROTOCOL.md "Key rotation"): the
-- record's fpr-alt, cached with the rest of the record. An outbox accepts a
-- login by either key.
ALTER TABLE dns_cache ADD COLUMN fpr_alt text;

-- sql/019's form with fpr-alt last; the shorter calls of older programs
-- store none (and clear a stale one).
CREATE FUNCTION dns_cache_put(p_domain text, p_status text, p_outbox text,
                              p_udp text, p_fpr text, p_policy text,
                              p_why text, p_ttl integer, p_validated boolean,
                              p_fpr_alt text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO dns_cache (domain, status, outbox, udp, fpr, policy, why, expires_at,
                           validated, fpr_alt)
    VALUES (p_domain, p_status, p_outbox, p_udp, p_fpr, p_policy, p_why,
            now() + make_interval(secs => least(greatest(p_ttl, 60), 86400)), p_validated,
            p_fpr_alt)
    ON CONFLICT (domain) DO UPDATE SET
        status = EXCLUDED.status, outbox = EXCLUDED.outbox, udp = EXCLUDED.udp,
        fpr = EXCLUDED.fpr, policy = EXCLUDED.policy, why = EXCLUDED.why,
        expires_at = EXCLUDED.expires_at, validated = EXCLUDED.validated,
        fpr_alt = EXCLUDED.fpr_alt
$$;

CREATE OR REPLACE FUNCTION dns_cache_put(p_domain text, p_status text, p_outbox text,
                                         p_udp text, p_fpr text, p_policy text,
                                         p_why text, p_ttl integer, p_validated boolean)
RETURNS void LANGUAGE sql AS $$
    SELECT dns_cache_put(p_domain, p_status, p_outbox, p_udp, p_fpr, p_policy, p_why,
                         p_ttl, p_validated, NULL)
$$;

CREATE OR REPLACE FUNCTION dns_cache_put(p_domain text, p_status text, p_outbox text,
                                         p_udp text, p_fpr text, p_policy text,
                                         p_why text, p_ttl integer)
RETURNS void LANGUAGE sql AS $$
    SELECT dns_cache_put(p_domain, p_status, p_outbox, p_udp, p_fpr, p_policy, p_why,
                         p_ttl, false, NULL)
$$;

-- sql/019's function with fpr_alt as its last column (a new OUT column
-- changes the row type: dropped and made again; callers name columns).
DROP FUNCTION discovery_get(text);
CREATE FUNCTION discovery_get(p_domain text,
                              OUT peer_found boolean, OUT peer_outbox_url text,
                              OUT peer_fpr text, OUT peer_pulling boolean,
                              OUT status text, OUT outbox text, OUT udp text, OUT fpr text,
                              OUT policy text, OUT why text, OUT validated boolean,
                              OUT fpr_alt text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT true, p.outbox_url, p.fpr, p.pulling
      INTO peer_found, peer_outbox_url, peer_fpr, peer_pulling
      FROM peer p WHERE p.domain = p_domain;
    peer_found := coalesce(peer_found, false);
    SELECT c.status, c.outbox, c.udp, c.fpr, c.policy, c.why, c.validated, c.fpr_alt
      INTO status, outbox, udp, fpr, policy, why, validated, fpr_alt
      FROM dns_cache_get(p_domain) c;
END $$;
