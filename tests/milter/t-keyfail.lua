-- t-keyfail.lua: w.example's outbox serves a key that is not the one its
-- record names. The key is refused at DATA and the message gets 451 4.7.5
-- before its body is sent: nothing is stored.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "KEYFAIL01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<wes@w.example>"), "rcpt to wes@w.example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol@c.example", SMFIR_CONTINUE)
	data(conn, SMFIR_REPLYCODE)
	mt.disconnect(conn)
end)
