-- t-inbound.lua: mail from outside (untrusted address, another listener's
-- {daemon_name}, no authentication) passes untouched: the milter accepts it
-- at MAIL FROM and is not involved any further. The same for a bounce (empty
-- envelope sender) from the submission listener.
dofile(testdir .. "/lib.lua")

local t = test("t-inbound")
local sender = "mallory@evil.example"
t:start()

local counts = "SELECT (SELECT count(*) FROM message), (SELECT count(*) FROM address_book)"
local before = t:sql(counts)
t:session("inbound and bounce mail accepted at MAIL FROM", function()
	local conn = open("203.0.113.5", "smtpd")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "inbound mail from", SMFIR_ACCEPT)
	mt.disconnect(conn)

	conn = open("203.0.113.5", nil)
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "inbound mail from (no macros)",
	     SMFIR_ACCEPT)
	mt.disconnect(conn)

	conn = open("192.0.2.10", "ORIGINATING")
	step(conn, mt.mailfrom(conn, "<>"), "bounce mail from", SMFIR_ACCEPT)
	mt.disconnect(conn)
end)
t:expect("nothing written", before, counts)
t:expect("no address book for the inbound sender", "0",
	"SELECT count(*) FROM address_book WHERE owner = 'mallory@evil.example'")
t:finish{ diverted = 0 }
