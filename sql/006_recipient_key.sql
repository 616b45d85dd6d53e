-- 006_recipient_key.sql — recipients' own keys (WKD lookups), cached.
--
-- The milter looks up each recipient of stored mail at
-- {outbox origin}/.well-known/openpgpkey/... (docs/PROTOCOL.md, "Recipient
-- keys") and encrypts to the key found there as well as to the domain key.
-- Every answer is kept here for a while, the negative ones too, so that a
-- recipient without a key costs one HTTP request per TTL, not one per
-- message:
--   found    the key with fingerprint fpr is in the milter's keyring   1 day
--   none     nothing published (404/410)                               1 hour
--   refused  an answer that broke a rule (why says which)              1 hour
--   error    network or server trouble (why says which)                5 minutes
-- The TTLs live in recipient_key_put alone, like dns_cache_put's.
CREATE TABLE recipient_key (
    address    text PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('found', 'none', 'refused', 'error')),
    fpr        text CHECK (fpr ~ '^[0-9A-F]{40}([0-9A-F]{24})?$'),
    why        text,
    fetched_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK ((status = 'found') = (fpr IS NOT NULL))
);

CREATE FUNCTION recipient_key_get(p_address text)
RETURNS SETOF recipient_key LANGUAGE sql STABLE AS $$
    SELECT * FROM recipient_key WHERE address = p_address AND expires_at > now()
$$;

CREATE FUNCTION recipient_key_put(p_address text, p_status text, p_fpr text, p_why text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO recipient_key (address, status, fpr, why, fetched_at, expires_at)
    VALUES (p_address, p_status, upper(p_fpr), p_why, now(),
            now() + CASE p_status WHEN 'found' THEN interval '1 day'
                                  WHEN 'error' THEN interval '5 minutes'
                                  ELSE interval '1 hour' END)
    ON CONFLICT (address) DO UPDATE SET
        status = EXCLUDED.status, fpr = EXCLUDED.fpr, why = EXCLUDED.why,
        fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at
$$;
