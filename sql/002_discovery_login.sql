-- 002_discovery_login.sql — DNS discovery cache, OpenPGP domain login,
-- poll rate limits, signed and encrypted messages with rejections.

-- An admin's peer row overrides what DNS says: fpr pins the domain key.
-- The shared secret of the first revision becomes optional (transitional
-- Basic auth); token login does not use it.
ALTER TABLE peer ADD COLUMN fpr text
    CHECK (fpr ~ '^[0-9A-F]{40}([0-9A-F]{24})?$');
ALTER TABLE peer ALTER COLUMN secret DROP NOT NULL;

-- _stubmail.<domain> answers, negative ones too, until expires_at.
CREATE TABLE dns_cache (
    domain     text PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('found', 'none', 'invalid')),
    outbox     text,
    udp        text,
    fpr        text,
    policy     text,
    why        text,
    expires_at timestamptz NOT NULL
);

-- Login nonces seen, kept for the skew window so a replay fails.
CREATE TABLE login_nonce (
    domain     text NOT NULL,
    nonce      text NOT NULL CHECK (nonce ~ '^[0-9a-f]{32}$'),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (domain, nonce)
);

-- When each polling domain last polled, for the minimum poll interval.
CREATE TABLE poll_state (
    domain       text PRIMARY KEY,
    last_poll_at timestamptz NOT NULL
);

-- A receiver that could not verify a message rejects it in its ack.
ALTER TABLE outbox ADD COLUMN rejected_reason text;

-- What the poller did with a fetched message.
ALTER TABLE received ADD COLUMN status text NOT NULL DEFAULT 'delivered'
    CHECK (status IN ('delivered', 'quarantined'));
ALTER TABLE received ADD COLUMN reason text;

-- Stored bodies of this revision are OpenPGP messages (signed by our domain
-- key, encrypted to the recipient domains' keys).
ALTER TABLE message ADD COLUMN format text NOT NULL DEFAULT 'rfc822'
    CHECK (format IN ('rfc822', 'openpgp'));

-- The cache is read and written through these two functions, so that the
-- milter, pollerd and mod_stubmail share one TTL policy: at least 60 s, at
-- most one day. Temporary failures are never stored.
CREATE FUNCTION dns_cache_get(p_domain text)
RETURNS SETOF dns_cache LANGUAGE sql STABLE AS $$
    SELECT * FROM dns_cache WHERE domain = p_domain AND expires_at > now()
$$;

CREATE FUNCTION dns_cache_put(p_domain text, p_status text, p_outbox text,
                              p_udp text, p_fpr text, p_policy text,
                              p_why text, p_ttl integer)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO dns_cache (domain, status, outbox, udp, fpr, policy, why, expires_at)
    VALUES (p_domain, p_status, p_outbox, p_udp, p_fpr, p_policy, p_why,
            now() + make_interval(secs => least(greatest(p_ttl, 60), 86400)))
    ON CONFLICT (domain) DO UPDATE SET
        status = EXCLUDED.status, outbox = EXCLUDED.outbox, udp = EXCLUDED.udp,
        fpr = EXCLUDED.fpr, policy = EXCLUDED.policy, why = EXCLUDED.why,
        expires_at = EXCLUDED.expires_at
$$;
