-- t-discovery-get.sql — discovery_get() (sql/009, sql/019) returns a domain's peer row and its unexpired cached verdict in one row, either or both or neither present

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
                 '(t,,,t,found,https://pc.example/o,192.0.2.1:2025,BBBB,x,,f)', 'peer row and cache');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('c.example') d),
                 '(f,,,,none,,,,,NXDOMAIN,f)', 'cache alone');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('old.example') d),
                 '(f,,,,,,,,,,)', 'an expired verdict is no verdict');
SELECT assert_eq((SELECT row(d.*)::text FROM discovery_get('nowhere.example') d),
                 '(f,,,,,,,,,,)', 'neither');
