-- t-dnsdown.lua: the DNS server goes down. A domain whose answer is not in
-- dns_cache cannot be decided: that recipient gets 451 4.4.3 (the client
-- retries; nothing is pushed that should have been pulled). A domain whose
-- answer is cached (d.example, asked while DNS was up) is still decided.
dofile(testdir .. "/lib.lua")

local t = test("t-dnsdown")
local sender = "dnsdown@a.example"
t:start()

t:session("d.example decided while DNS is up (cached)", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	check(mt.abort(conn) == nil, "mt.abort")
	mt.disconnect(conn)
end)
-- the runner starts dnsmasq again after this test
local stopped = false
if sh(dnsstop) then
	for _ = 1, 50 do
		if not sh("dig +short +time=1 +tries=1 -p " .. resolver:match(":(%d+)$")
		          .. " @127.0.0.1 TXT ready.example | grep -q ready") then
			stopped = true
			break
		end
		os.execute("sleep 0.1")
	end
end
check(stopped, "cannot stop dnsmasq")

t:session("DNS server down: 451 for an undecided domain, a cached one still decided", function()
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
t:logged("logged as 451 4.4.3 with the domain and the reason",
	"error: DNSDOWN01: from=<dnsdown@a.example> to=<fay@f.example>: cannot tell whether "
	.. "f.example pulls its mail: .*_stubmail.f.example.*; answered 451 4.4.3")
t:expect("a temporary failure is not cached", "0",
	"SELECT count(*) FROM dns_cache WHERE domain = 'f.example'")
t:finish{ diverted = 0, errors = { "from=<dnsdown@a.example>" } }
