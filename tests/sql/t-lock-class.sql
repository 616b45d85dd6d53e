-- t-lock-class.sql — stubmail_lock_class() names the advisory-lock classes; subscription changes and outbox writes lock their domain in class "subscription"
SELECT assert_eq(stubmail_lock_class('migrate'), 7239031, 'migrate'),
       assert_eq(stubmail_lock_class('pollerd'), 7239032, 'pollerd'),
       assert_eq(stubmail_lock_class('subscription'), 7239033, 'subscription');

-- an unknown name (or NULL) is an error, never a NULL class that locks nothing
DO $$
DECLARE
    n text;
BEGIN
    FOREACH n IN ARRAY ARRAY['subscriptions', NULL]::text[] LOOP
        BEGIN
            PERFORM stubmail_lock_class(n);
            RAISE EXCEPTION 'stubmail_lock_class(%) did not fail', quote_nullable(n);
        EXCEPTION WHEN raise_exception THEN
            IF SQLERRM NOT LIKE 'stubmail_lock_class: no lock class named %' THEN
                RAISE;
            END IF;
        END;
    END LOOP;
END $$;

-- the advisory locks this session holds in class "subscription", as
-- "domain mode" (pg_locks shows the two int4 keys as classid and objid)
CREATE FUNCTION my_subscription_locks() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(d.domain || ' ' || l.mode, ', ' ORDER BY d.domain, l.mode)
      FROM pg_locks l
      JOIN (VALUES ('c.example'), ('d.example')) AS d(domain)
        ON l.objid = (hashtext(d.domain)::bigint & 4294967295)::oid
     WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.objsubid = 2
       AND l.classid = stubmail_lock_class('subscription')::oid
$$;

BEGIN;
SELECT ok FROM subscription_change('c.example', true, NULL,
                                   pairs_json(ARRAY[['*@a.example', 'r@c.example']]), '[]');
SELECT assert_eq(my_subscription_locks(), 'c.example ExclusiveLock',
                 'a subscription change locks its domain exclusively');
COMMIT;

BEGIN;
SELECT put_message(md5('m1'), 'alice@a.example', ARRAY['r@c.example', 's@d.example']);
SELECT assert_eq(my_subscription_locks(), 'c.example ShareLock, d.example ShareLock',
                 'an outbox insert locks the domains of its recipients, shared');
COMMIT;

BEGIN;
UPDATE outbox SET retrieved_at = now() WHERE message_id = md5('m1') AND recipient = 'r@c.example';
SELECT assert_eq(my_subscription_locks(), 'c.example ShareLock', 'an ack locks its domain, shared');
COMMIT;
