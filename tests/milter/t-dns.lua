-- t-dns.lua: the pulling decision comes from DNS (a dnsmasq on loopback,
-- cached in dns_cache): d.example publishes a _stubmail record (pulled),
-- e.example has none and inv.example an invalid one (both pushed, the
-- invalid one with a warning in the log). None of them has a peer row. A
-- second message to the same domains is decided from dns_cache alone.
dofile(testdir .. "/lib.lua")

local t = test("t-dns")
t:start()

local function send(sender)
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
end

t:session("DNS-discovered domain pulled; no record, invalid record: pushed",
	function() send("dns1@a.example") end)
t:expect("outbox row for the DNS-discovered recipient only", "bob@d.example",
	[[SELECT o.recipient FROM outbox o JOIN message m ON m.id = o.message_id
	  WHERE m.sender = 'dns1@a.example']])
t:expect("the body is stored signed and encrypted (format openpgp)", "openpgp",
	"SELECT format FROM message WHERE sender = 'dns1@a.example'")
t:sealed_is("d.example decrypts exactly the message", "dns1@a.example", rundir .. "/gd", fpr_a,
	"Subject: found by DNS\r\n\r\nPulled by d, pushed to e and inv.\r\n")
t:expect("answers cached in dns_cache, negative ones too",
	"d.example|found|" .. fpr_d .. "\ne.example|none|\ninv.example|invalid|",
	[[SELECT domain, status, coalesce(fpr, '') FROM dns_cache
	  WHERE domain IN ('d.example', 'e.example', 'inv.example') ORDER BY 1]])
t:logged("the invalid record is a warning naming the domain and why",
	"warning: DNS01: from=<dns1@a.example> to=<ivan@inv.example>: inv.example has an invalid "
	.. "_stubmail record \\(.*outbox.*\\); pushed by SMTP")
t:session("a second message, same domains", function() send("dns2@a.example") end)
local asked = {}
for _, d in ipairs({ "d.example", "e.example", "inv.example" }) do
	asked[#asked + 1] = d .. ": " .. tostring(t:dns_queries(d))
end
t:ok("answered from dns_cache: DNS asked once per domain for both messages",
	table.concat(asked, ", ") == "d.example: 1, e.example: 1, inv.example: 1",
	table.concat(asked, ", "))
t:finish{ diverted = 2 }
