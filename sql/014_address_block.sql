-- 014_address_block.sql — a receiver stops a sender: the one-click
-- unsubscribe (RFC 8058) of pulled mail, docs/admin-guide.md "Unsubscribe".
--
-- address_book says whose mail a local user wants pulled, and the milter
-- adds to it whenever the user writes to someone. Taking an entry out is
-- not enough to stop a sender: a *@domain entry still covers the sender,
-- and an introduction would ask again. A block row says "not this sender
-- for this user": pollerd refuses what an outbox lists for a blocked pair
-- (the sender's ISP sees the ack "rejected: unsubscribed") and records no
-- introduction from it.
--
-- A block ends when the user wants that sender again: an address-book
-- entry for exactly that contact is inserted, by the milter because the
-- user wrote to the sender (mail of their own: the milter does not learn
-- from Auto-Submitted mail to a pulling domain, RFC 3834, so an auto-reply
-- never lifts a block), by accepting an introduction, or by the admin.
CREATE TABLE address_block (
    owner          text NOT NULL,
    contact        text NOT NULL,
    contact_domain text NOT NULL,
    source         text NOT NULL DEFAULT 'unsubscribe'
                   CHECK (source IN ('unsubscribe', 'user', 'admin')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, contact)
);
CREATE INDEX address_block_by_contact_domain ON address_block (contact_domain);

-- One statement for the unsubscribe endpoint: the address-book entry out,
-- any introduction from the sender gone, the block in. Sent twice, the
-- second finds nothing to remove and the block already there.
-- p_source: 'unsubscribe' (the link in a message) or 'user' (their page).
CREATE FUNCTION address_unsubscribe(p_owner text, p_contact text,
                                    OUT removed boolean, OUT newly_blocked boolean,
                                    p_source text DEFAULT 'unsubscribe')
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM address_book WHERE owner = p_owner AND contact = p_contact
        RETURNING 1),
    intro AS (
        DELETE FROM introduction WHERE recipient = p_owner AND sender = p_contact
        RETURNING 1),
    blocked AS (
        INSERT INTO address_block (owner, contact, contact_domain, source)
        VALUES (p_owner, p_contact, split_part(p_contact, '@', 2), p_source)
        ON CONFLICT (owner, contact) DO NOTHING RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone), EXISTS (SELECT 1 FROM blocked)
$$;

-- AFTER INSERT: a learned entry that is already in the book (ON CONFLICT DO
-- NOTHING) fires nothing, so storing a message costs nothing more; only a
-- new entry looks for a block to lift.
CREATE FUNCTION address_block_lift() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM address_block WHERE owner = NEW.owner AND contact = NEW.contact;
    RETURN NULL;
END $$;

CREATE TRIGGER address_block_lift AFTER INSERT ON address_book
    FOR EACH ROW EXECUTE FUNCTION address_block_lift();

-- The user adds a contact on their page, unblocks one, or accepts an
-- introduction: all three are "I want this sender's mail". The entry goes
-- in as the user's (a learned one becomes theirs), the block and the
-- introduction go. One statement; the trigger above would lift the block
-- of a new entry, this also lifts it when the entry was there already.
CREATE FUNCTION address_add(p_owner text, p_contact text,
                            OUT added boolean, OUT unblocked boolean,
                            OUT introduced boolean)
LANGUAGE sql AS $$
    WITH unblock AS (
        DELETE FROM address_block WHERE owner = p_owner AND contact = p_contact
        RETURNING 1),
    intro AS (
        DELETE FROM introduction WHERE recipient = p_owner AND sender = p_contact
        RETURNING 1),
    book AS (
        INSERT INTO address_book (owner, contact, contact_domain, source)
        VALUES (p_owner, p_contact, split_part(p_contact, '@', 2), 'user')
        ON CONFLICT (owner, contact) DO UPDATE SET source = 'user'
        RETURNING (xmax = 0) AS inserted)
    SELECT coalesce((SELECT inserted FROM book), false),
           EXISTS (SELECT 1 FROM unblock), EXISTS (SELECT 1 FROM intro)
$$;

-- The sender's view on their page: their messages, newest first.
CREATE INDEX message_by_sender ON message (sender, created_at);
