-- 019_dnssec.sql — whether a cached _stubmail answer was DNSSEC-validated
-- (the AD bit of a resolver the program believes; lib/sm_dns.c), so that a
-- domain for which the admin requires validation is refused from the cache
-- as it is from a live answer.

-- Rows cached before this migration count as not validated: a domain that
-- requires validation is refused until its row expires (a day at most), or
-- at once asked again when the admin empties dns_cache.
ALTER TABLE dns_cache ADD COLUMN validated boolean NOT NULL DEFAULT false;

-- The programs of this revision store with the flag; the eight-argument
-- form of sql/002 stays for older ones and stores "not validated".
CREATE FUNCTION dns_cache_put(p_domain text, p_status text, p_outbox text,
                              p_udp text, p_fpr text, p_policy text,
                              p_why text, p_ttl integer, p_validated boolean)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO dns_cache (domain, status, outbox, udp, fpr, policy, why, expires_at,
                           validated)
    VALUES (p_domain, p_status, p_outbox, p_udp, p_fpr, p_policy, p_why,
            now() + make_interval(secs => least(greatest(p_ttl, 60), 86400)), p_validated)
    ON CONFLICT (domain) DO UPDATE SET
        status = EXCLUDED.status, outbox = EXCLUDED.outbox, udp = EXCLUDED.udp,
        fpr = EXCLUDED.fpr, policy = EXCLUDED.policy, why = EXCLUDED.why,
        expires_at = EXCLUDED.expires_at, validated = EXCLUDED.validated
$$;

-- The eight-argument form must not keep an earlier answer's flag.
CREATE OR REPLACE FUNCTION dns_cache_put(p_domain text, p_status text, p_outbox text,
                                         p_udp text, p_fpr text, p_policy text,
                                         p_why text, p_ttl integer)
RETURNS void LANGUAGE sql AS $$
    SELECT dns_cache_put(p_domain, p_status, p_outbox, p_udp, p_fpr, p_policy, p_why,
                         p_ttl, false)
$$;

-- discovery_get (sql/009) with the flag as its last column; a new OUT
-- column changes the result type, so the function is made anew.
DROP FUNCTION discovery_get(text);
CREATE FUNCTION discovery_get(p_domain text,
                              OUT peer_found boolean, OUT peer_outbox_url text,
                              OUT peer_fpr text, OUT peer_pulling boolean,
                              OUT status text, OUT outbox text, OUT udp text, OUT fpr text,
                              OUT policy text, OUT why text, OUT validated boolean)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT true, p.outbox_url, p.fpr, p.pulling
      INTO peer_found, peer_outbox_url, peer_fpr, peer_pulling
      FROM peer p WHERE p.domain = p_domain;
    peer_found := coalesce(peer_found, false);
    SELECT c.status, c.outbox, c.udp, c.fpr, c.policy, c.why, c.validated
      INTO status, outbox, udp, fpr, policy, why, validated
      FROM dns_cache_get(p_domain) c;
END $$;
