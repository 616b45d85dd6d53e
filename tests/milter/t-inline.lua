-- t-inline.lua: a sealed body of at most inline_max octets is stored in its
-- message row (sql/010), by the store's one statement: no spool file is
-- made, not even in spool/tmp. With inline_max 0, or a sealed body over it,
-- the body is a spool file as before (t-big, t-stream: one that outgrew
-- the milter's buffer, sealed as it arrived). An inline_max over 1M is refused.
dofile(testdir .. "/lib.lua")

local t = test("t-inline")

-- One small message from sender to bob@d.example, diverted.
local function send(sender, qid, text)
	t:session("a small message from " .. sender, function()
		local conn = open("192.0.2.10", "ORIGINATING")
		check(mt.macro(conn, SMFIC_MAIL, "i", qid) == nil, "mt.macro(i)")
		step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
		step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
		data(conn, SMFIR_CONTINUE)
		step(conn, mt.header(conn, "Subject", "inline"), "header", SMFIR_CONTINUE)
		step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
		step(conn, mt.bodystring(conn, text), "body", SMFIR_CONTINUE)
		step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
		mt.disconnect(conn)
	end)
end

local function where(sender)
	return " FROM message WHERE sender = '" .. sender .. "'"
end

t:sh_ok("-n refuses inline_max over 1M",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "inline_max: 1048577 is not between 0"',
	milter, t:config("bad.conf", { inline_max = "1048577" }))

t:start("default inline_max")
send("small@a.example", "INL01", "Kept in the row.\r\n")
t:expect("the small body is in its row: no spool_name, size is its length", "t|t|t",
	"SELECT spool_name IS NULL, body IS NOT NULL, size = octet_length(body)"
	.. where("small@a.example"))
t:spool_empty("no spool file for it, committed or in tmp")
t:sealed_is("d.example decrypts the row's body byte-exact, good signature",
	"small@a.example", rundir .. "/gd", fpr_a, "Subject: inline\r\n\r\nKept in the row.\r\n")
t:expect("the row holds no plaintext", "f",
	"SELECT position('Kept in the row'::bytea in body) > 0" .. where("small@a.example"))
t:logged("the diverted line says body=row", ": diverted id=.* from=<small@a.example> .* body=row")
t:stop()

-- a sealed body is 300 octets and more: over this bound, into the spool
t:start("inline_max 100", t:config("small.conf", { inline_max = "100" }))
send("over@a.example", "INL02", "Sealed into memory, then too big for the row.\r\n")
t:expect("over inline_max: a spool file named by the row, no body in it", "t|t|t",
	"SELECT spool_name = id, body IS NULL, size > 100" .. where("over@a.example"))
t:sealed_is("its spool file decrypts byte-exact", "over@a.example", rundir .. "/gd", fpr_a,
	"Subject: inline\r\n\r\nSealed into memory, then too big for the row.\r\n")
t:logged("the diverted line says body=spool", ": diverted id=.* from=<over@a.example> .* body=spool")
t:stop()

t:start("inline_max 0", t:config("none.conf", { inline_max = "0" }))
send("file@a.example", "INL03", "In the spool as before.\r\n")
t:expect("inline_max 0: a spool file, no body in the row", "t|t",
	"SELECT spool_name = id, body IS NULL" .. where("file@a.example"))
t:sealed_is("its spool file decrypts byte-exact", "file@a.example", rundir .. "/gd", fpr_a,
	"Subject: inline\r\n\r\nIn the spool as before.\r\n")
t:finish{ diverted = 1 }   -- the log is the last start's
