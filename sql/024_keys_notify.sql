-- 024_keys_notify.sql — every change of who a domain is, or of a
-- recipient's cached key, is announced on the channel stubmail_keys.
--
-- stubmail-milter keeps each recipient domain's verdict (the peer row and
-- the cached _stubmail record, discovery_get of sql/009) and each
-- recipient's cached key (recipient_key_get of sql/006) in process, so
-- that a diverted message does not ask for them again (milter/smf_cache.c).
-- It LISTENs here and forgets what each notice names: an administrator's
-- edit of peer, an answer another milter cached, the janitor's cleaning
-- take effect at once. Payloads: "d:DOMAIN" (peer, dns_cache),
-- "r:ADDRESS" (recipient_key), "*" (a TRUNCATE: forget everything).
-- NOTIFY folds a transaction's equal notices into one.

CREATE FUNCTION keys_notify_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prefix text := TG_ARGV[0];
    column_name text := TG_ARGV[1];
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('stubmail_keys', prefix || (to_jsonb(OLD) ->> column_name));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('stubmail_keys', prefix || (to_jsonb(NEW) ->> column_name));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION keys_notify_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stubmail_keys', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER peer_keys_notify AFTER INSERT OR UPDATE OR DELETE ON peer
    FOR EACH ROW EXECUTE FUNCTION keys_notify_row('d:', 'domain');
CREATE TRIGGER dns_cache_keys_notify AFTER INSERT OR UPDATE OR DELETE ON dns_cache
    FOR EACH ROW EXECUTE FUNCTION keys_notify_row('d:', 'domain');
CREATE TRIGGER recipient_key_keys_notify AFTER INSERT OR UPDATE OR DELETE ON recipient_key
    FOR EACH ROW EXECUTE FUNCTION keys_notify_row('r:', 'address');
CREATE TRIGGER peer_keys_notify_all AFTER TRUNCATE ON peer
    FOR EACH STATEMENT EXECUTE FUNCTION keys_notify_all();
CREATE TRIGGER dns_cache_keys_notify_all AFTER TRUNCATE ON dns_cache
    FOR EACH STATEMENT EXECUTE FUNCTION keys_notify_all();
CREATE TRIGGER recipient_key_keys_notify_all AFTER TRUNCATE ON recipient_key
    FOR EACH STATEMENT EXECUTE FUNCTION keys_notify_all();
