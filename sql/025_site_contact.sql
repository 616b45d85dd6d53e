-- 025_site_contact.sql — site-wide contacts: senders every local user
-- pulls from without having written to them (a bank's or an airline's
-- notification address, or *@ its domain).
--
-- address_book is per user and learned from what the user sends; a
-- notification domain is never written to, so its mail would wait unpulled
-- for every user. A site_contact row stands for an address-book entry of
-- every local user of the domains this database serves: pollerd subscribes
-- the pair (contact, user) for each user that has an address book (the
-- same "real local user" rule introductions use, sql/005), except users
-- who unsubscribed from that sender (address_block, sql/014). Managed with
-- `stubmailctl book site add|remove|list`.
CREATE TABLE site_contact (
    contact        text PRIMARY KEY,        -- normalised address or *@domain
    contact_domain text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (contact_domain = split_part(contact, '@', 2) AND contact_domain <> '')
);
CREATE INDEX site_contact_by_domain ON site_contact (contact_domain);
