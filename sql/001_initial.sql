-- 001_initial.sql — the end-to-end path: peers with shared secrets, outbox,
-- address books, received ids. Applied by sql/stubmail-migrate, which wraps
-- each file in a transaction and records it in schema_migrations.

-- Domains we exchange pulled mail with. On the sender side a row with
-- pulling = true makes the milter divert mail for that domain into the outbox;
-- on the receiver side outbox_url tells pollerd where to poll. The secret is
-- shared by the two domains and used in both directions (HTTP Basic auth,
-- user = the polling domain). DNS discovery and OpenPGP login replace it later.
CREATE TABLE peer (
    domain      text PRIMARY KEY CHECK (domain = lower(domain) AND domain <> ''),
    outbox_url  text,
    secret      text NOT NULL CHECK (length(secret) >= 16),
    pulling     boolean NOT NULL DEFAULT true
);

-- One stored body per message; the bytes live in a spool file named
-- spool_name inside the spool directory (fsync'd before this row commits).
CREATE TABLE message (
    id              text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    sender          text NOT NULL,
    size            bigint NOT NULL CHECK (size >= 0),
    spool_name      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    body_deleted_at timestamptz
);

-- One row per pulling recipient of a message.
CREATE TABLE outbox (
    message_id       text NOT NULL REFERENCES message(id) ON DELETE CASCADE,
    recipient        text NOT NULL,
    recipient_domain text NOT NULL,
    retrieved_at     timestamptz,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX outbox_pending_by_recipient
    ON outbox (recipient_domain, recipient) WHERE retrieved_at IS NULL;

-- Whose mail a local user wants pulled. contact is an address or *@domain.
CREATE TABLE address_book (
    owner          text NOT NULL,
    contact        text NOT NULL,
    contact_domain text NOT NULL,
    source         text NOT NULL DEFAULT 'learned'
                   CHECK (source IN ('learned', 'admin', 'user')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, contact)
);
CREATE INDEX address_book_by_contact_domain ON address_book (contact_domain);

-- What pollerd has handed to the local MTA, so that a crash between delivery
-- and ack never delivers twice.
CREATE TABLE received (
    remote_domain text NOT NULL,
    message_id    text NOT NULL,
    recipient     text NOT NULL,
    sender        text NOT NULL,
    delivered_at  timestamptz NOT NULL DEFAULT now(),
    acked_at      timestamptz,
    PRIMARY KEY (remote_domain, message_id, recipient)
);
CREATE INDEX received_unacked ON received (remote_domain) WHERE acked_at IS NULL;
