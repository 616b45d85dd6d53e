-- t-dsn.lua: the RFC 3461 parameters of a diverted message reach its rows
-- (sql/016) through the callbacks: NOTIFY and ORCPT per recipient, ENVID
-- per message, well formed and hostile. What is not well formed (an
-- unknown NOTIFY keyword, NEVER with SUCCESS, an ORCPT or ENVID whose
-- xtext hides a line break) is left out, logged with the queue id, and the
-- message is diverted all the same.
dofile(testdir .. "/lib.lua")

local t = test("t-dsn")

local function send(name, qid, envid, rcpts)
	t:session(name, function()
		local conn = open("192.0.2.10", "ORIGINATING")
		check(mt.macro(conn, SMFIC_MAIL, "i", qid) == nil, "mt.macro(i)")
		if envid then
			step(conn, mt.mailfrom(conn, "<alice@a.example>", "ENVID=" .. envid), "mail from",
			     SMFIR_CONTINUE)
		else
			step(conn, mt.mailfrom(conn, "<alice@a.example>"), "mail from", SMFIR_CONTINUE)
		end
		for _, r in ipairs(rcpts) do
			step(conn, mt.rcptto(conn, table.unpack(r)), "rcpt to " .. r[1], SMFIR_CONTINUE)
		end
		data(conn, SMFIR_CONTINUE)
		step(conn, mt.header(conn, "Subject", name), "header", SMFIR_CONTINUE)
		step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
		step(conn, mt.bodystring(conn, "asked\r\n"), "body", SMFIR_CONTINUE)
		step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
		mt.disconnect(conn)
	end)
end

local function rows(envid_where)
	return "SELECT string_agg(o.recipient || ' ' || coalesce(o.dsn_notify::text, '-') || ' '"
	       .. " || coalesce(o.dsn_orcpt, '-'), ' | ' ORDER BY o.recipient)"
	       .. " FROM outbox o JOIN message m ON m.id = o.message_id WHERE " .. envid_where
end

t:start()
send("well formed", "DSN01", "QQ+2B314", {
	{ "<bob@d.example>", "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2BTag@d.example" },
	{ "<carol@d.example>", "notify=never" },
	{ "<dave@d.example>" } })
send("hostile", "DSN02", "x+0D+0ABcc:+20eve@x", {
	{ "<bob@d.example>", "NOTIFY=SUCCESS,BOGUS", "ORCPT=rfc822;x+0D+0AInjected:+20y@d.example" },
	{ "<carol@d.example>", "NOTIFY=NEVER,SUCCESS", "ORCPT=rfc822;carol+2" },
	{ "<dave@d.example>", "NOTIFY=", "ORCPT=nosemicolon" } })

t:expect("well formed: each recipient's NOTIFY and ORCPT",
         "bob@d.example {success,failure} rfc822;Bob+Tag@d.example | carol@d.example {never} - | dave@d.example - -",
         rows("m.dsn_envid = 'QQ+314'"))
t:expect("hostile: only the known keyword is kept, no ORCPT, no ENVID",
         "bob@d.example {success} - | carol@d.example - - | dave@d.example - -",
         rows("m.dsn_envid IS NULL"))
t:expect("two messages stored", "2", "SELECT count(*) FROM message")
t:logged("the unknown keyword is logged with the queue id",
         "DSN02: from=<alice@a.example> to=<bob@d.example>: NOTIFY: unknown keyword \"BOGUS\" ignored; ORCPT: not xtext")
t:logged("NEVER with SUCCESS is logged", "DSN02: .*to=<carol@d.example>: NOTIFY: NEVER with other")
t:logged("the hostile ENVID is logged", "DSN02: from=<alice@a.example>: ENVID: not xtext")
t:finish{ diverted = 2 }
