-- t-local.lua: mail submitted without SMTP (sendmail(1)) reaches the
-- milter through Postfix's non_smtpd_milters as from localhost[127.0.0.1],
-- with the {daemon_name} of Postfix's cleanup. With 127.0.0.1 outside
-- trusted_networks and no ORIGINATING mark it is not outbound: passed on
-- to be pushed, and the milter says why in one warning a run, naming the
-- fix. Marked ORIGINATING (the admin guide's pickup cleanup), the same
-- mail is diverted.
dofile(testdir .. "/lib.lua")

local t = test("t-local")
t:start(nil, t:config("milter.conf", { trusted_networks = "192.0.2.0/24" }))

-- what cleanup(8) presents for a message that pickup(8) brought
local function local_submission(sender, daemon)
	return submit(open("127.0.0.1", daemon, "localhost"),
	              { id = "LOCAL01", from = sender, subject = "local",
	                body = "From the command line.\r\n" })
end

local r1, r2, r3
t:session("sendmail(1) mail, not marked", function()
	r1 = local_submission("l1@a.example", "mx.a.example")
end)
t:ok("not outbound: accepted at MAIL FROM, to be pushed", r1 == SMFIR_ACCEPT)
t:session("a second one", function() r2 = local_submission("l2@a.example", "mx.a.example") end)
t:ok("the second too", r2 == SMFIR_ACCEPT)
t:logged("a warning says why and names the fix",
	"warning: LOCAL01: from=<l1@a.example>: mail from localhost\\[127.0.0.1\\].* is not "
	.. "outbound here: \\{daemon_name\\} is mx.a.example, not ORIGINATING, and 127.0.0.1 is "
	.. "not in trusted_networks.*milter_macro_daemon_name=ORIGINATING")
t:sh_ok("said once a run", '[ "$(grep -c "which is how Postfix presents mail" "$1")" = 1 ]',
	t.log)
t:session("the same mail through a cleanup marked ORIGINATING", function()
	r3 = local_submission("l3@a.example", "ORIGINATING")
end)
t:ok("diverted", r3 == SMFIR_DISCARD)
t:expect("stored for the marked one only", "l3@a.example", "SELECT sender FROM message")
t:finish{ diverted = 1 }
