-- t-address-block.sql — address_unsubscribe() (sql/014) takes the sender out of the user's address book, drops its introduction and blocks it, once; a new address-book entry for exactly that contact lifts the block, an existing one fires nothing

INSERT INTO address_book (owner, contact, contact_domain) VALUES
    ('bob@b.example', 'alice@a.example', 'a.example'),
    ('bob@b.example', '*@news.example', 'news.example'),
    ('carol@b.example', 'alice@a.example', 'a.example');
INSERT INTO introduction (recipient, sender, sender_domain) VALUES
    ('bob@b.example', 'mallory@a.example', 'a.example');

SELECT assert_eq((SELECT row(u.*)::text FROM address_unsubscribe('bob@b.example', 'alice@a.example') u),
                 '(t,t)', 'the entry removed and the block made');
SELECT assert_eq((SELECT count(*) FROM address_book WHERE owner = 'bob@b.example' AND contact = 'alice@a.example'),
                 0::bigint, 'no entry left');
SELECT assert_eq((SELECT count(*) FROM address_book WHERE owner = 'carol@b.example'),
                 1::bigint, 'another user''s entry for the same sender stays');
SELECT assert_eq((SELECT contact_domain || ' ' || source FROM address_block WHERE owner = 'bob@b.example'),
                 'a.example unsubscribe', 'the block row');
SELECT assert_eq((SELECT row(u.*)::text FROM address_unsubscribe('bob@b.example', 'alice@a.example') u),
                 '(f,f)', 'twice: nothing more to do');

-- a sender covered by a *@domain entry: nothing to remove, blocked all the same
SELECT assert_eq((SELECT row(u.*)::text FROM address_unsubscribe('bob@b.example', 'offers@news.example') u),
                 '(f,t)', 'a sender under a wildcard entry is blocked');
SELECT assert_eq((SELECT count(*) FROM address_book WHERE contact = '*@news.example'),
                 1::bigint, 'the wildcard entry stays');

-- an introduction from the sender goes
SELECT assert_eq((SELECT row(u.*)::text FROM address_unsubscribe('bob@b.example', 'mallory@a.example') u),
                 '(f,t)', 'an introduced sender is blocked');
SELECT assert_eq((SELECT count(*) FROM introduction), 0::bigint, 'its introduction is gone');

-- learning the same contact again (the milter's INSERT ... ON CONFLICT DO NOTHING) lifts the block
INSERT INTO address_book (owner, contact, contact_domain)
    SELECT 'bob@b.example', c, d FROM unnest(ARRAY['alice@a.example'], ARRAY['a.example']) AS t(c, d)
    ON CONFLICT DO NOTHING;
SELECT assert_eq((SELECT count(*) FROM address_block WHERE contact = 'alice@a.example'),
                 0::bigint, 'writing to the sender again lifts the block');
SELECT assert_eq((SELECT count(*) FROM address_block WHERE owner = 'bob@b.example'),
                 2::bigint, 'the other blocks stay');
-- an entry already there fires nothing: carol's block (made by hand) stays though she learns alice again
INSERT INTO address_block (owner, contact, contact_domain, source) VALUES ('carol@b.example', 'alice@a.example', 'a.example', 'admin');
INSERT INTO address_book (owner, contact, contact_domain) VALUES ('carol@b.example', 'alice@a.example', 'a.example')
    ON CONFLICT DO NOTHING;
SELECT assert_eq((SELECT count(*) FROM address_block WHERE owner = 'carol@b.example'),
                 1::bigint, 'a conflicting insert lifts nothing');
