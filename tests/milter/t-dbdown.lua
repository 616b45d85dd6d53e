-- t-dbdown.lua: PostgreSQL is down. Outbound recipients get a temporary
-- failure (451 4.3.0 through smfi_setreply: SMFIR_REPLYCODE), so the MTA
-- keeps the mail; nothing is written.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_REPLYCODE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_REPLYCODE)
	check(mt.abort(conn) == nil, "mt.abort")
	mt.disconnect(conn)
end)
