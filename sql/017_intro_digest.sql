-- 017_intro_digest.sql — introductions reach the user: stubmail-pollerd
-- mails each user a short digest of the senders who newly want to write
-- to them (intro_digest, off by default), with accept / decline links.
--
-- announced_at says that a digest named the introduction: each one is
-- announced once. It is set only after the MTA took the digest, so a digest
-- that failed announces nothing and its introductions go in the next one.
-- A sender who keeps sending stubs is not announced again (stubs only
-- count); a sender dropped (`intro drop`) and introduced anew is a new row,
-- announced again. A declined sender is blocked and introduced no more.
ALTER TABLE introduction ADD COLUMN announced_at timestamptz;

-- The digests to write: recipients with unannounced introductions.
CREATE INDEX introduction_unannounced ON introduction (recipient)
    WHERE announced_at IS NULL;

-- When each user last got a digest: at most one per intro_digest interval,
-- across restarts of pollerd too.
CREATE TABLE intro_digest (
    recipient text PRIMARY KEY,
    sent_at   timestamptz NOT NULL
);
