-- t-discard.lua: an authenticated client ({auth_authen} at MAIL FROM) on an
-- untrusted address sends only to pulling recipients: the message is stored
-- for both and discarded from the push path.
dofile(testdir .. "/lib.lua")

run(function()
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
