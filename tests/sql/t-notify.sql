-- t-notify.sql — sql/016: outbox_store_quota() keeps what RCPT TO and MAIL FROM asked for (NOTIFY per recipient, ORCPT, ENVID), and called as before stores none of it; outbox_notice_due() says which acked rows the sender gets a notice about: success only with NOTIFY=SUCCESS, failure with NOTIFY=FAILURE or none, never with NEVER, a recalled row never, a noticed row never again; the CHECK refuses unknown keywords and NEVER with others

SELECT assert_eq((SELECT row(stored, refused)::text
                    FROM outbox_store_quota(md5('n1'), 'alice@a.example', 1, NULL, 'openpgp',
                         ARRAY['bob@b.example', 'carol@b.example', 'dave@b.example', 'erin@b.example', 'fred@b.example'],
                         ARRAY['b.example', 'b.example', 'b.example', 'b.example', 'b.example'],
                         '{}', '{}', '\x00'::bytea, 0, 0,
                         ARRAY['success', '', 'never', 'success,failure', 'failure'],
                         ARRAY['rfc822;Bob@B.example', '', '', '', ''], 'env-1')),
                 '(t,f)', 'stored with NOTIFY, ORCPT and ENVID');
SELECT assert_eq((SELECT string_agg(recipient || '=' || coalesce(dsn_notify::text, '-') || '/'
                                    || coalesce(dsn_orcpt, '-'), ' ' ORDER BY recipient) FROM outbox),
                 'bob@b.example={success}/rfc822;Bob@B.example carol@b.example=-/- dave@b.example={never}/- erin@b.example={success,failure}/- fred@b.example={failure}/-',
                 'per recipient: the keywords and the ORCPT, NULL when not given');
SELECT assert_eq((SELECT dsn_envid FROM message), 'env-1', 'the ENVID is the message''s');

SELECT assert_eq((SELECT count(*) FROM outbox o WHERE outbox_notice_due(o)), 0::bigint,
                 'nothing is due before an ack');
-- everyone retrieved it
UPDATE outbox SET retrieved_at = now();
SELECT assert_eq((SELECT string_agg(recipient, ' ' ORDER BY recipient) FROM outbox o WHERE outbox_notice_due(o)),
                 'bob@b.example erin@b.example', 'retrieved: a success notice only where NOTIFY=SUCCESS');
-- everyone rejected it
UPDATE outbox SET rejected_reason = 'refused by b.example: 550 5.1.1 no such user';
SELECT assert_eq((SELECT string_agg(recipient, ' ' ORDER BY recipient) FROM outbox o WHERE outbox_notice_due(o)),
                 'carol@b.example erin@b.example fred@b.example',
                 'rejected: a failure notice with FAILURE or without NOTIFY, none with NEVER or SUCCESS alone');
UPDATE outbox SET recalled_at = now() WHERE recipient = 'carol@b.example';
UPDATE outbox SET notified_at = now() WHERE recipient = 'erin@b.example';
SELECT assert_eq((SELECT string_agg(recipient, ' ' ORDER BY recipient) FROM outbox o WHERE outbox_notice_due(o)),
                 'fred@b.example', 'recalled and noticed rows are not due');
SELECT assert_eq((SELECT string_agg(recipient, ' ' ORDER BY recipient) FROM outbox o
                   WHERE notified_at IS NULL AND retrieved_at IS NOT NULL AND recalled_at IS NULL
                     AND (rejected_reason IS NOT NULL OR 'success' = ANY (dsn_notify))
                     AND outbox_notice_due(o)),
                 'fred@b.example', 'the partial index''s predicate holds every due row');

-- called as before sql/016: nothing asked
SELECT assert_eq((SELECT stored FROM outbox_store_quota(md5('n2'), 'alice@a.example', 1, NULL, 'openpgp',
                         ARRAY['bob@b.example'], ARRAY['b.example'], '{}', '{}', '\x00'::bytea, 0, 0)),
                 true, 'the twelve-argument call still stores');
SELECT assert_eq((SELECT row(o.dsn_notify IS NULL, o.dsn_orcpt IS NULL, m.dsn_envid IS NULL)::text
                    FROM outbox o JOIN message m ON m.id = o.message_id WHERE m.id = md5('n2')),
                 '(t,t,t)', 'without them: no NOTIFY, ORCPT or ENVID');

DO $$
BEGIN
    BEGIN
        UPDATE outbox SET dsn_notify = '{bogus}' WHERE message_id = md5('n2');
        RAISE EXCEPTION 'an unknown keyword was stored';
    EXCEPTION WHEN check_violation THEN NULL;
    END;
    BEGIN
        UPDATE outbox SET dsn_notify = '{never,success}' WHERE message_id = md5('n2');
        RAISE EXCEPTION 'NEVER with SUCCESS was stored';
    EXCEPTION WHEN check_violation THEN NULL;
    END;
END $$;
-- reached: the CHECK refused both
