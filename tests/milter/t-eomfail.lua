-- t-eomfail.lua: PostgreSQL goes away between RCPT and end of message. The
-- milter answers 451 4.3.0 at end of message with its own text, removes the
-- spool file it wrote, and removes no recipient.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "EOMFAIL01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "database goes away"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Never stored.\r\n"), "body", SMFIR_CONTINUE)
	check(dbstop ~= nil, "dbstop not given")
	local ok = os.execute(dbstop)
	check(ok == true or ok == 0, "stopping PostgreSQL failed")
	step(conn, mt.eom(conn), "eom", SMFIR_REPLYCODE)
	check(mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0",
	      "stubmail: database unavailable, try again later"),
	      "eom: not the expected 451 4.3.0 reply")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<bob@b.example>"),
	      "a recipient was removed although nothing was stored")
	mt.disconnect(conn)
end)
