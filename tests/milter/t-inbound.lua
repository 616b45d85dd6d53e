-- t-inbound.lua: mail from outside (untrusted address, another listener's
-- {daemon_name}, no authentication) passes untouched: the milter accepts it
-- at MAIL FROM and is not involved any further. The same for a bounce (empty
-- envelope sender) from the submission listener.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("203.0.113.5", "smtpd")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "inbound mail from", SMFIR_ACCEPT)
	mt.disconnect(conn)

	conn = open("203.0.113.5", nil)
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "inbound mail from (no macros)",
	     SMFIR_ACCEPT)
	mt.disconnect(conn)

	conn = open("192.0.2.10", "ORIGINATING")
	step(conn, mt.mailfrom(conn, "<>"), "bounce mail from", SMFIR_ACCEPT)
	mt.disconnect(conn)
end)
