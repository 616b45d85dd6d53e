-- 003_drop_peer_secret.sql — the end of the shared secrets.
--
-- peer.secret was the password of HTTP Basic auth between two peers (001),
-- optional once OpenPGP domain login and bearer tokens came (002) and kept
-- only for the transitional Basic path. That path is gone from mod_stubmail
-- and stubmail-pollerd: every request now carries a token obtained by a
-- login signed with the polling domain's key, so nothing reads the column
-- any more, and a stored shared password is only something to leak.
ALTER TABLE peer DROP COLUMN secret;
