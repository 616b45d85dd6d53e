-- t-nodaemon.lua: an MTA that sends no {daemon_name} (a Sendmail whose
-- confMILTER_MACROS_CONNECT leaves it out) marks no submission port, so
-- only trusted_networks and authenticated clients are outbound. The milter
-- says so in one warning a run, naming the Sendmail options; mail from an
-- untrusted client then passes untouched, mail from a trusted one is still
-- diverted. With {daemon_name} sent, nothing is said.
dofile(testdir .. "/lib.lua")

local t = test("t-nodaemon")
t:start(nil, t:config("milter.conf", { trusted_networks = "192.0.2.0/24" }))

local function submit_from(ip, daemon, sender)
	return submit(open(ip, daemon), { id = "NODMN01", from = sender, subject = "no daemon",
	                                  body = "Hello.\r\n" })
end

local r0, r1, r2, r3
t:session("with {daemon_name}: nothing said", function()
	r0 = submit_from("203.0.113.9", "MTA", "x0@a.example")
end)
t:ok("untrusted, not originating: accepted untouched", r0 == SMFIR_ACCEPT)
t:sh_ok("no warning while the macro comes", '! grep -q "sends no {daemon_name}" "$1"', t.log)
t:session("no {daemon_name}, untrusted client", function()
	r1 = submit_from("203.0.113.9", nil, "x1@a.example")
end)
t:ok("not outbound: accepted at MAIL FROM", r1 == SMFIR_ACCEPT)
t:session("no {daemon_name}, trusted client", function()
	r2 = submit_from("192.0.2.10", nil, "x2@a.example")
end)
t:ok("trusted: diverted", r2 == SMFIR_DISCARD)
t:session("no {daemon_name} again", function()
	r3 = submit_from("203.0.113.9", nil, "x3@a.example")
end)
t:ok("again accepted", r3 == SMFIR_ACCEPT)
t:logged("a warning names the macros and the Sendmail options",
	"warning: connect from \\[203.0.113.9\\]: the MTA sends no \\{daemon_name\\} macro.*"
	.. "confMILTER_MACROS_CONNECT.*confMILTER_MACROS_ENVFROM")
t:sh_ok("said once a run", '[ "$(grep -c "sends no {daemon_name}" "$1")" = 1 ]', t.log)
t:expect("stored: the trusted one only", "x2@a.example", "SELECT sender FROM message")
t:finish{ diverted = 1 }
