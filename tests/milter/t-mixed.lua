-- t-mixed.lua: outbound mail (submission listener, {daemon_name}
-- ORIGINATING) to one pulling and one push recipient. The pulling one is
-- removed from the envelope exactly as received, the message continues for
-- the other; headers reach the spool byte-exact (the runner compares the
-- file).
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.test_action(conn, SMFIF_DELRCPT), "SMFIF_DELRCPT not negotiated")
	check(mt.test_option(conn, SMFIP_HDR_LEADSPC), "SMFIP_HDR_LEADSPC not negotiated")
	check(not mt.test_option(conn, SMFIP_NODATA), "xxfi_data negotiated away")

	check(mt.macro(conn, SMFIC_MAIL, "i", "MIXED01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<Bob@B.Example>"), "rcpt to bob", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "From", "Alice <" .. sender .. ">"), "header From", SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", " two  spaces"), "header Subject", SMFIR_CONTINUE)
	step(conn, mt.header(conn, "X-Folded", "first\n\tsecond"), "header X-Folded", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Hello Bob.\r\n"), "body 1", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Second chunk.\r\n"), "body 2", SMFIR_CONTINUE)
	local r = step(conn, mt.eom(conn), "eom", nil)
	check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT,
	      "eom: expected continue or accept, got " .. string.format("%c", r))
	check(mt.eom_check(conn, MT_RCPTDELETE, "<Bob@B.Example>"),
	      "pulling recipient <Bob@B.Example> was not removed")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<carol@c.example>"),
	      "push recipient <carol@c.example> was removed")
	mt.disconnect(conn)
end)
