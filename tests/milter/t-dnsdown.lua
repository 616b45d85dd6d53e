-- t-dnsdown.lua: the DNS server is down. A domain whose answer is not in
-- dns_cache cannot be decided: that recipient gets 451 4.4.3 (the client
-- retries; nothing is pushed that should have been pulled). A domain whose
-- answer is cached (d.example) is still decided.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "DNSDOWN01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<fay@f.example>"), "rcpt to fay@f.example (not cached)",
	     SMFIR_REPLYCODE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example (cached)",
	     SMFIR_CONTINUE)
	check(mt.abort(conn) == nil, "mt.abort")
	mt.disconnect(conn)
end)
