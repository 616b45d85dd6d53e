-- t-keyfail.lua: w.example's outbox serves a key that is not the one its
-- record names. The key is refused at DATA and the message gets 451 4.7.5
-- before its body is sent: nothing is stored, and the wrong key stays out
-- of gnupg_home.
dofile(testdir .. "/lib.lua")

local t = test("t-keyfail")
local sender = "keyfail@a.example"
t:start()

t:session("the outbox serves another key than the record names: 451 at DATA", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "KEYFAIL01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<wes@w.example>"), "rcpt to wes@w.example", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol@c.example", SMFIR_CONTINUE)
	data(conn, SMFIR_REPLYCODE)
	mt.disconnect(conn)
end)
t:logged("logged as 451 4.7.5 with the domain, the fingerprint and why",
	"error: KEYFAIL01: from=<keyfail@a.example>: message not stored: no domain key " .. fpr_x
	.. " of w.example: .+; answered 451 4.7.5")
t:expect("nothing stored", "0|0",
	[[SELECT (SELECT count(*) FROM message WHERE sender = 'keyfail@a.example'),
	         (SELECT count(*) FROM address_book WHERE owner = 'keyfail@a.example')]])
t:spool_empty("no spool file left")
t:sh_ok("the wrong key did not get into gnupg_home",
	'! gpg --homedir "$1" --batch --list-keys "$2" >/dev/null 2>&1', t.home, fpr_x)
t:finish{ diverted = 0, errors = { "from=<keyfail@a.example>" } }
