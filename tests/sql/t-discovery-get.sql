-- t-discovery-get.sql — discovery_get() (sql/009, sql/025) returns a domain's peer row and its unexpired cached verdict in one row, either or both or neither present, with a key rotation's fpr_alt; dns_cache_put() stores fpr_alt, and its older eight-argument call clears it

INSERT INTO peer (domain, outbox_url, fpr, pulling) VALUES
    ('p.example', 'https://p.example/stubmail', '0123456789ABCDEF0123456789ABCDEF01234567', false),
    ('pc.example', NULL, NULL, true);
INSERT INTO dns_cache (domain, status, outbox, udp, fpr, policy, why, expires_at) VALUES
    ('pc.example', 'found', 'https://pc.example/o', '192.0.2.1:2025', 'BBBB', 'x', NULL, now() + interval '1 hour'),
    ('c.example', 'none', NULL, NULL, NULL, NULL, 'NXDOMAIN', now() + interval '1 hour'),
    ('old.example', 'found', 'https://old.example/o', NULL, 'CCCC', NULL, NULL, now() - interval '1 second');

SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('p.example') d),
                 '(t,https://p.example/stubmail,0123456789ABCDEF0123456789ABCDEF01234567,f,,,,,,,)', 'peer row alone');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('pc.example') d),
                 '(t,,,t,found,https://pc.example/o,192.0.2.1:2025,BBBB,x,,)', 'peer row and cache');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('c.example') d),
                 '(f,,,,none,,,,,NXDOMAIN,)', 'cache alone');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('old.example') d),
                 '(f,,,,,,,,,,)', 'an expired verdict is no verdict');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('nowhere.example') d),
                 '(f,,,,,,,,,,)', 'neither');

SELECT dns_cache_put('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p2', NULL, 300, 'EEEE');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('r.example') d),
                 '(f,,,,found,https://r.example/o,,DDDD,p2,,EEEE)', 'fpr_alt stored and read');
SELECT dns_cache_put('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p3', NULL, 300);
SELECT assert_eq((SELECT fpr_alt FROM dns_cache WHERE domain = 'r.example'), NULL::text,
                 'the eight-argument call clears a stale fpr_alt');
