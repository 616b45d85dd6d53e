-- 007_rate_limit.sql — rate limits of logins and polls, shared by every
-- Apache child.
--
-- Each POST /v1/login costs the outbox a GnuPG signature check, so logins
-- are limited per client address and per claimed domain before any of that
-- work (StubmailLoginRate, StubmailLoginAddressRate). Polls keep their
-- minimum interval but may come in a short burst, so that a poller paging
-- through "more": true or sending its pairs in chunks is not held up
-- (StubmailMinPollInterval, StubmailPollBurst). Both are one rule, a token
-- bucket of n requests refilled over secs seconds, kept as the generic cell
-- rate algorithm: one timestamp per key (tat, the "theoretical arrival
-- time": when the bucket will be full again), so a check is one locked row.
CREATE TABLE rate_limit (
    kind text NOT NULL CHECK (kind IN ('login_address', 'login_domain', 'poll')),
    key  text NOT NULL,
    tat  timestamptz NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX rate_limit_tat ON rate_limit (tat);

-- Take one request from the bucket of (p_kind, p_key), which holds p_n and
-- fills again in p_secs seconds. 0: taken; else the whole seconds until one
-- is back (the Retry-After). One upsert, for the poll path's sake: it
-- takes the request only when the locked, latest row allows it (ON
-- CONFLICT ... WHERE), so concurrent requests of one key are ordered and a
-- first request races nothing. A refused request takes nothing, so a
-- client that waits as told gets through. (PL/pgSQL, not SQL: PostgreSQL
-- 15 plans a non-inlined SQL function's body at every call.)
CREATE FUNCTION rate_take(p_kind text, p_key text, p_n integer, p_secs integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_step interval := make_interval(secs => p_secs::float8 / p_n);
    v_slack interval := make_interval(secs => p_secs) - v_step;
    v_wait integer;
BEGIN
    INSERT INTO rate_limit AS r (kind, key, tat) VALUES (p_kind, p_key, now() + v_step)
    ON CONFLICT (kind, key) DO UPDATE SET tat = greatest(r.tat, now()) + v_step
        WHERE greatest(r.tat, now()) - now() <= v_slack;
    IF FOUND THEN
        RETURN 0;
    END IF;
    SELECT greatest(1, ceil(extract(epoch FROM greatest(tat, now()) - now() - v_slack)))
      INTO v_wait FROM rate_limit WHERE kind = p_kind AND key = p_key;
    RETURN coalesce(v_wait, 1);
END $$;

-- A key whose bucket has been full for ten minutes says nothing any more.
-- Called with logins (rare), not with polls: that keeps the poll path at
-- one locked row, and the table at the keys of the last few minutes even
-- when logins come from many addresses.
CREATE FUNCTION rate_clean() RETURNS void LANGUAGE sql AS $$
    DELETE FROM rate_limit WHERE tat < now() - interval '10 minutes'
$$;

-- The minimum poll interval moved into rate_limit (kind 'poll').
DROP TABLE poll_state;
