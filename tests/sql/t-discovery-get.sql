-- t-discovery-get.sql — discovery_get() (sql/009, sql/019, sql/025) returns a domain's peer row and its unexpired cached verdict in one row, either or both or neither present, with a key rotation's fpr_alt; dns_cache_put() stores fpr_alt, and the older calls clear it

INSERT INTO peer (domain, outbox_url, fpr, pulling) VALUES
    ('p.example', 'https://p.example/stubmail', '0123456789ABCDEF0123456789ABCDEF01234567', false),
    ('pc.example', NULL, NULL, true);
INSERT INTO dns_cache (domain, status, outbox, udp, fpr, policy, why, expires_at) VALUES
    ('pc.example', 'found', 'https://pc.example/o', '192.0.2.1:2025', 'BBBB', 'x', NULL, now() + interval '1 hour'),
    ('c.example', 'none', NULL, NULL, NULL, NULL, 'NXDOMAIN', now() + interval '1 hour'),
    ('old.example', 'found', 'https://old.example/o', NULL, 'CCCC', NULL, NULL, now() - interval '1 second');

SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('p.example') d),
                 '(t,https://p.example/stubmail,0123456789ABCDEF0123456789ABCDEF01234567,f,,,,,,,,)', 'peer row alone');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('pc.example') d),
                 '(t,,,t,found,https://pc.example/o,192.0.2.1:2025,BBBB,x,,f,)', 'peer row and cache');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('c.example') d),
                 '(f,,,,none,,,,,NXDOMAIN,f,)', 'cache alone');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('old.example') d),
                 '(f,,,,,,,,,,,)', 'an expired verdict is no verdict');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('nowhere.example') d),
                 '(f,,,,,,,,,,,)', 'neither');

SELECT dns_cache_put('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p2', NULL, 300, true, 'EEEE');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('r.example') d),
                 '(f,,,,found,https://r.example/o,,DDDD,p2,,t,EEEE)', 'fpr_alt stored and read');
SELECT dns_cache_put('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p3', NULL, 300, true);
SELECT assert_eq((SELECT fpr_alt FROM dns_cache WHERE domain = 'r.example'), NULL::text,
                 'the nine-argument call (sql/019) clears a stale fpr_alt');
SELECT dns_cache_put('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p4', NULL, 300, false, 'EEEE');
SELECT dns_cache_put('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p5', NULL, 300);
SELECT assert_eq((SELECT row(fpr_alt, validated)::text FROM dns_cache WHERE domain = 'r.example'),
                 '(,f)', 'the eight-argument call clears fpr_alt and validated');
-- the calls as the programs make them, parameters untyped: one function each
PREPARE put9(text, text, text, text, text, text, text, text, text) AS
    SELECT dns_cache_put($1, $2, $3, $4, $5, $6, $7, CAST($8 AS integer), CAST($9 AS boolean));
EXECUTE put9('r.example', 'found', 'https://r.example/o', NULL, 'DDDD', 'p6', NULL, '300', 'true');
