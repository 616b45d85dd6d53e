-- t-dbrestart.lua: PostgreSQL restarts between RCPT and end of message. The
-- pooled connections died with the old server; the store at end of message
-- goes to the new one (the dead connection is found before anything is sent
-- on it) and the message is stored once, without a temporary failure.
dofile(testdir .. "/lib.lua")

local t = test("t-dbrestart")
local sender = "restart@a.example"
t:start()

t:session("database restarted before end of message: stored once, discarded", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "RESTART01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "across a restart"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Stored once.\r\n"), "body", SMFIR_CONTINUE)
	check(sh(dbstop), "stopping PostgreSQL failed")
	check(sh(dbstart), "starting PostgreSQL failed")
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)

t:expect("one message, one outbox row", "1|1",
	[[SELECT (SELECT count(*) FROM message WHERE sender = 'restart@a.example'),
	         (SELECT count(*) FROM outbox o JOIN message m ON m.id = o.message_id
	           WHERE m.sender = 'restart@a.example')]])
t:sealed_is("spool file written, b.example decrypts it", sender, rundir .. "/gb", fpr_a,
	"Subject: across a restart\r\n\r\nStored once.\r\n")
t:finish{ diverted = 1 }
