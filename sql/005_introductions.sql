-- 005_introductions.sql — first contact: UDP stubs from senders that no
-- local address book holds (stubmail-pollerd, `introductions = yes`).
--
-- One row per (local recipient, remote sender): when pollerd first and last
-- heard of mail waiting for the recipient, and how many stubs said so. A
-- stub is never a reason to fetch: the mail stays in the sender's outbox
-- until the recipient accepts the introduction (`stubmail-pollerd -c FILE
-- intro accept RECIPIENT SENDER`), which adds the sender to the address
-- book with source 'user'. pollerd keeps at most `introductions_max` rows
-- per recipient, so a flood of forged stubs cannot fill the disk.
CREATE TABLE introduction (
    recipient     text NOT NULL,
    sender        text NOT NULL,
    sender_domain text NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    stubs         bigint NOT NULL DEFAULT 1 CHECK (stubs > 0),
    PRIMARY KEY (recipient, sender)
);
