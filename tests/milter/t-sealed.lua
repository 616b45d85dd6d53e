-- t-sealed.lua: the milter signs and encrypts (gnupg_home, domain_key).
-- d.example and g.example pull (DNS records; their keys come from their
-- outboxes at DATA), c.example opted out in the peer table, b.example pulls
-- by the peer table but no key is known for it: pushed. The runner decrypts
-- the stored body with d's and with g's key.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "SEALED01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<Dora@G.Example>"), "rcpt to Dora@G.Example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol@c.example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob@b.example", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "From", "Alice <" .. sender .. ">"), "header From", SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "sealed"), "header Subject", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "For d and g only.\r\n"), "body 1", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Signed by a.\r\n"), "body 2", SMFIR_CONTINUE)
	local r = step(conn, mt.eom(conn), "eom", nil)
	check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT,
	      "eom: expected continue or accept, got " .. string.format("%c", r))
	check(mt.eom_check(conn, MT_RCPTDELETE, "<bob@d.example>"), "<bob@d.example> not removed")
	check(mt.eom_check(conn, MT_RCPTDELETE, "<Dora@G.Example>"), "<Dora@G.Example> not removed")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<carol@c.example>"), "<carol@c.example> removed")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<bob@b.example>"),
	      "<bob@b.example> (pulling, but no key known) removed")
	mt.disconnect(conn)
end)
