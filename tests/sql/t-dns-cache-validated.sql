-- t-dns-cache-validated.sql — dns_cache keeps whether an answer was DNSSEC-validated (sql/019): the nine-argument dns_cache_put stores the flag, discovery_get returns it, and the eight-argument form of older programs stores "not validated" even over a validated row

SELECT dns_cache_put('v.example', 'found', 'https://v.example/o', NULL, 'AAAA', 'p', NULL, 300, true);
SELECT assert_eq((SELECT validated FROM discovery_get('v.example')), true, 'validated answer');

SELECT dns_cache_put('v.example', 'found', 'https://v.example/o', NULL, 'AAAA', 'p', NULL, 300, false);
SELECT assert_eq((SELECT validated FROM discovery_get('v.example')), false, 'unvalidated answer replaces it');

SELECT dns_cache_put('v.example', 'found', 'https://v.example/o', NULL, 'AAAA', 'p', NULL, 300, true);
SELECT dns_cache_put('v.example', 'found', 'https://v.example/o', NULL, 'AAAA', 'p', NULL, 300);
SELECT assert_eq((SELECT validated FROM discovery_get('v.example')), false,
                 'an older program''s put is not validated');

SELECT dns_cache_put('n.example', 'none', NULL, NULL, NULL, NULL, 'NXDOMAIN', 300, true);
SELECT assert_eq((SELECT row(status, why, validated)::text FROM discovery_get('n.example')),
                 '(none,NXDOMAIN,t)', 'a validated denial');
SELECT assert_eq((SELECT validated FROM discovery_get('nowhere.example')), NULL::boolean,
                 'nothing cached: NULL');
