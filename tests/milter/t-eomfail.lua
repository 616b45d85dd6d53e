-- t-eomfail.lua: PostgreSQL goes away between RCPT and end of message. The
-- milter answers 451 4.3.0 at end of message with its own text, removes the
-- spool file it wrote, and removes no recipient. Nothing was stored.
dofile(testdir .. "/lib.lua")

local t = test("t-eomfail")
local sender = "eomfail@a.example"
t:start()

t:session("database lost before end of message: 451 4.3.0, no recipient removed", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "EOMFAIL01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "database goes away"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Never stored.\r\n"), "body", SMFIR_CONTINUE)
	check(sh(dbstop), "stopping PostgreSQL failed")
	step(conn, mt.eom(conn), "eom", SMFIR_REPLYCODE)
	check(mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0",
	      "stubmail: database unavailable, try again later"),
	      "eom: not the expected 451 4.3.0 reply")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<bob@b.example>"),
	      "a recipient was removed although nothing was stored")
	mt.disconnect(conn)
end)
t:spool_empty("the spool file was removed")
t:logged("milter logs the end-of-message tempfail with queue id and sender",
	"EOMFAIL01: from=<eomfail@a.example>: message not stored")

t:ok("PostgreSQL starts again", sh(dbstart))
t:expect("db down: nothing stored for the tempfailed message", "0|0",
	[[SELECT (SELECT count(*) FROM message WHERE sender = 'eomfail@a.example'),
	         (SELECT count(*) FROM address_book WHERE owner = 'eomfail@a.example')]])
t:finish{ diverted = 0, errors = { "from=<eomfail@a.example>" } }
