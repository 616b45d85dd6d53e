-- t-trusted.lua: a client inside trusted_networks (IPv6), no macros. First
-- message: pulling only, discarded. Second message on the same connection:
-- push only; the milter learns the address book at DATA and steps aside.
dofile(testdir .. "/lib.lua")

local t = test("t-trusted")
local sender = "erin@a.example"
t:start()

t:session("trusted IPv6 client diverted; push-only mail accepted at DATA", function()
	local conn = open("2001:db8::25", nil)
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from 1", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "from a trusted network"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Pulled.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom 1", SMFIR_DISCARD)

	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from 2", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<frank@c.example>"), "rcpt to frank", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<postmaster>"), "rcpt to postmaster", SMFIR_CONTINUE)
	check(not mt.test_option(conn, SMFIP_NODATA), "xxfi_data negotiated away")
	step(conn, mt.data(conn), "data 2 (push only)", SMFIR_ACCEPT)
	mt.disconnect(conn)
end)

t:expect("one message, outbox bob", "bob@b.example",
	[[SELECT o.recipient FROM outbox o JOIN message m ON m.id = o.message_id
	  WHERE m.sender = 'erin@a.example']])
t:expect("push-only mail still learned (frank), <postmaster> skipped",
	"bob@b.example\nfrank@c.example",
	"SELECT contact FROM address_book WHERE owner = 'erin@a.example' ORDER BY 1")
t:finish{ diverted = 1 }
