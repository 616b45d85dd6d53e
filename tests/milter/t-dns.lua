-- t-dns.lua: the pulling decision comes from DNS (a dnsmasq on loopback,
-- cached in dns_cache): d.example publishes a _stubmail record (pulled),
-- e.example has none and inv.example an invalid one (both pushed, the
-- invalid one with a warning in the log). None of them has a peer row.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "DNS01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<erin@e.example>"), "rcpt to erin@e.example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<ivan@inv.example>"), "rcpt to ivan@inv.example", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "found by DNS"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Pulled by d, pushed to e and inv.\r\n"), "body",
	     SMFIR_CONTINUE)
	local r = step(conn, mt.eom(conn), "eom", nil)
	check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT,
	      "eom: expected continue or accept, got " .. string.format("%c", r))
	check(mt.eom_check(conn, MT_RCPTDELETE, "<bob@d.example>"),
	      "DNS-discovered pulling recipient <bob@d.example> was not removed")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<erin@e.example>"),
	      "<erin@e.example> (no record) was removed")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<ivan@inv.example>"),
	      "<ivan@inv.example> (invalid record) was removed")
	mt.disconnect(conn)
end)
