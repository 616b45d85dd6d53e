-- t-discard.lua: an authenticated client ({auth_authen} at MAIL FROM) on an
-- untrusted address sends only to pulling recipients: the message is stored
-- for both and discarded from the push path.
dofile(testdir .. "/lib.lua")

local t = test("t-discard")
local sender = "grace@a.example"
t:start()

t:session("authenticated sender, all pulling, message discarded", function()
	local conn = open("198.51.100.7", nil)
	check(mt.macro(conn, SMFIC_MAIL, "i", "DISC01", "{auth_authen}", "grace") == nil,
	      "mt.macro(auth_authen)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<Dave@B.EXAMPLE>"), "rcpt to dave", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "for two pullers"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Both of you pull this.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)

t:expect("two outbox rows", "bob@b.example\ndave@b.example",
	[[SELECT o.recipient FROM outbox o JOIN message m ON m.id = o.message_id
	  WHERE m.sender = 'grace@a.example' ORDER BY 1]])
t:sealed_is("spool file written, b.example decrypts it", sender, rundir .. "/gb", fpr_a,
	"Subject: for two pullers\r\n\r\nBoth of you pull this.\r\n")
t:finish{ diverted = 1 }
