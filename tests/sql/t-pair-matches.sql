-- t-pair-matches.sql — pair_matches() is the rule "the sender, or *@ its domain", and the planner inlines it into an index condition
SELECT assert_eq(pair_matches(s, 'alice@a.example'), want, s)
  FROM (VALUES ('alice@a.example', true),
               ('*@a.example', true),
               ('bob@a.example', false),         -- another address
               ('*@b.example', false),           -- another domain
               ('*@sub.a.example', false),       -- no subdomains
               ('*@example', false),
               ('*', false),
               ('alice@a.example ', false),      -- exact: stored normalised
               (NULL, NULL)) AS t(s, want);
SELECT assert_eq(sender_patterns('alice@a.example'), ARRAY['alice@a.example', '*@a.example'],
                 'sender_patterns: the address, then *@ its domain');

-- Inlined, pair_matches() is a condition on subscription's primary key
-- (domain, recipient, sender), as sql/004's IN list was: marked STRICT,
-- VOLATILE or written in plpgsql it would turn into a filter run on every
-- pair of the recipient.
SET enable_seqscan = off;
DO $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXPLAIN (COSTS OFF)
        SELECT 1 FROM subscription s
         WHERE s.domain = 'c.example' AND s.recipient = 'r@c.example'
           AND pair_matches(s.sender, 'alice@a.example') LOOP
        plan := plan || line || E'\n';
    END LOOP;
    PERFORM assert_true(plan ~ 'Index Cond: .*sender = ANY', 'pair_matches is an index condition:' || E'\n' || plan);
    PERFORM assert_true(plan !~ 'pair_matches', 'pair_matches is inlined:' || E'\n' || plan);
END $$;
