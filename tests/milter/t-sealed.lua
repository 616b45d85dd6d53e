-- t-sealed.lua: the milter signs and encrypts (gnupg_home, domain_key).
-- d.example and g.example pull (DNS records; their keys come from their
-- outboxes at DATA), c.example opted out in the peer table, b.example pulls
-- by the peer table but no key is known for it here: pushed. d.example and
-- g.example both decrypt the stored body.
dofile(testdir .. "/lib.lua")

local t = test("t-sealed")
local sender = "sealed@a.example"
local _, updated = t:sql("UPDATE peer SET fpr = NULL WHERE domain = 'b.example'")
check(updated, "cannot update peer b.example")
t:start("signing and encrypting")

t:session("DNS-pulled domains removed; opted-out and keyless peer pushed", function()
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

t:expect("outbox rows for d.example and g.example", "bob@d.example\ndora@g.example",
	[[SELECT o.recipient FROM outbox o JOIN message m ON m.id = o.message_id
	  WHERE m.sender = 'sealed@a.example' ORDER BY 1]])
t:expect("format openpgp", "openpgp", "SELECT format FROM message WHERE sender = 'sealed@a.example'")
t:sh_ok("the stored body holds no plaintext", '! grep -rq "For d and g only" "$1"', t.spool)
local want = "From: Alice <sealed@a.example>\r\nSubject: sealed\r\n\r\nFor d and g only.\r\n"
	.. "Signed by a.\r\n"
t:sealed_is("d.example decrypts exactly the message, good signature by a.example's key",
	sender, rundir .. "/gd", fpr_a, want)
t:sealed_is("g.example decrypts it too", sender, rundir .. "/gg", fpr_a, want)
t:ok("the keys were fetched from the outboxes, once each",
	t:key_gets("d") == 1 and t:key_gets("g") == 1,
	string.format("d: %s, g: %s", t:key_gets("d"), t:key_gets("g")))
t:logged("the pulling peer without a known key is logged and pushed",
	"warning: SEALED01: from=<sealed@a.example> to=<bob@b.example>: b.example pulls its mail "
	.. "\\(peer table\\) but no domain key is known")
t:finish{ diverted = 1 }
