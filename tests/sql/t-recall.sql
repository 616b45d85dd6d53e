-- t-recall.sql — message_recall() (sql/015) takes a message back from the recipients who have not fetched it, in one statement: their matches leave the poll, the body goes, the fetched ones are kept; another sender's message recalls nothing. address_add() (sql/014): add, unblock, accept in one

SELECT subscription_change('b.example', true, NULL,
       pairs_json(ARRAY[['alice@a.example', 'bob@b.example'], ['alice@a.example', 'carol@b.example']]),
       '[]'::jsonb);
SELECT put_message('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'alice@a.example',
                   ARRAY['bob@b.example', 'carol@b.example']);
SELECT assert_eq((SELECT count(*) FROM pending_match), 2::bigint, 'two recipients wait');
-- bob's ISP fetched and acked it
UPDATE outbox SET retrieved_at = now() WHERE recipient = 'bob@b.example';

SELECT assert_eq((SELECT row(recalled, kept, sent_at IS NOT NULL)::text
                    FROM message_recall('mallory@a.example', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')),
                 '(0,0,f)', 'another sender recalls nothing, and learns nothing of the message');
SELECT assert_eq((SELECT row(recalled, kept, sent_at IS NOT NULL)::text
                    FROM message_recall('alice@a.example', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')),
                 '(1,1,t)', 'carol''s copy recalled, bob''s kept');
SELECT assert_eq((SELECT count(*) FROM pending_match), 0::bigint, 'gone from the poll at once');
SELECT assert_eq((SELECT string_agg(recipient || ':' || (recalled_at IS NOT NULL), ' ' ORDER BY recipient)
                    FROM outbox), 'bob@b.example:false carol@b.example:true', 'the rows say who');
SELECT assert_true((SELECT body_deleted_at IS NOT NULL FROM message), 'nobody waits: the body goes');
SELECT assert_eq((SELECT row(recalled, kept)::text
                    FROM message_recall('alice@a.example', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')),
                 '(0,2)', 'twice: nothing more to recall');

-- address_add: a blocked sender added back; an introduction accepted
INSERT INTO address_block (owner, contact, contact_domain) VALUES ('bob@b.example', 'news@a.example', 'a.example');
INSERT INTO introduction (recipient, sender, sender_domain) VALUES ('bob@b.example', 'dave@a.example', 'a.example');
SELECT assert_eq((SELECT row(a.*)::text FROM address_add('bob@b.example', 'news@a.example') a),
                 '(t,t,f)', 'unblock: added and unblocked');
SELECT assert_eq((SELECT row(a.*)::text FROM address_add('bob@b.example', 'dave@a.example') a),
                 '(t,f,t)', 'accept: added, the introduction gone');
SELECT assert_eq((SELECT count(*) FROM introduction), 0::bigint, 'no introduction left');
INSERT INTO address_book (owner, contact, contact_domain) VALUES ('bob@b.example', 'erin@a.example', 'a.example');
SELECT assert_eq((SELECT row(a.*)::text FROM address_add('bob@b.example', 'erin@a.example') a),
                 '(f,f,f)', 'a learned entry added again: nothing new');
SELECT assert_eq((SELECT source FROM address_book WHERE contact = 'erin@a.example'),
                 'user', 'but it is the user''s now');
