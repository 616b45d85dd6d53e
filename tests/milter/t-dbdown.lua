-- t-dbdown.lua: PostgreSQL is down at RCPT. Outbound recipients get a
-- temporary failure (451 4.3.0 through smfi_setreply: SMFIR_REPLYCODE), so
-- the MTA keeps the mail; nothing is written. When PostgreSQL is back the
-- same milter process diverts again by itself.
dofile(testdir .. "/lib.lua")

local t = test("t-dbdown")
t:start()

check(sh(dbstop), "stopping PostgreSQL failed")
t:session("database down: recipients tempfailed", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	step(conn, mt.mailfrom(conn, "<dbdown@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_REPLYCODE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_REPLYCODE)
	check(mt.abort(conn) == nil, "mt.abort")
	mt.disconnect(conn)
end)
t:spool_empty("no spool file written")
t:logged("milter logs the tempfail with the reason",
	"from=<dbdown@a.example> to=<bob@b.example>: cannot connect to the database")

t:ok("PostgreSQL starts again", sh(dbstart))
os.execute("sleep 1.2")     -- past the milter's one-second hold-off after a failed connect
t:expect("db down: nothing stored for the tempfailed message", "0|0",
	[[SELECT (SELECT count(*) FROM message WHERE sender = 'dbdown@a.example'),
	         (SELECT count(*) FROM address_book WHERE owner = 'dbdown@a.example')]])
t:session("recovery: diverts again after PostgreSQL restarted (same milter process)", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "RECOVER01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<alice2@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<Bob@B.Example>"), "rcpt to bob", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "back again"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Stored.\r\n"), "body", SMFIR_CONTINUE)
	local r = step(conn, mt.eom(conn), "eom", nil)
	check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT,
	      "eom: expected continue or accept, got " .. string.format("%c", r))
	check(mt.eom_check(conn, MT_RCPTDELETE, "<Bob@B.Example>"),
	      "pulling recipient <Bob@B.Example> was not removed")
	mt.disconnect(conn)
end)
t:expect("recovery: message stored", "bob@b.example",
	[[SELECT o.recipient FROM outbox o JOIN message m ON m.id = o.message_id
	  WHERE m.sender = 'alice2@a.example']])
t:finish{ diverted = 1, errors = { "from=<dbdown@a.example>" } }
