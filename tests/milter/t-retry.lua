-- t-retry.lua: a message that a client sends again (the answer to its
-- first attempt lost after the commit) is known by its identity
-- (milter/smf_ident.c, sql/021) and answered as stored, storing nothing:
-- the same envelope and content with a Message-ID under a new queue id,
-- whatever Received header comes with it; another recipient, another
-- sender or another body is another message; without a Message-ID two
-- identical sends are two messages. A big (spilled) retry leaves no spool
-- file behind.
dofile(testdir .. "/lib.lua")

local t = test("t-retry")
local qids = 0

-- One message from sender to rcpt (text as the body, in 65535-octet
-- steps); received: a Received header value (nil: none); msgid: its
-- Message-ID (nil: none). Stored or a retry, the answer is DISCARD.
local function send(name, sender, rcpt, text, msgid, received)
	t:session(name, function()
		qids = qids + 1
		local conn = open("192.0.2.10", "ORIGINATING")
		check(mt.macro(conn, SMFIC_MAIL, "i", string.format("RETRY%02d", qids)) == nil,
		      "mt.macro(i)")
		step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
		step(conn, mt.rcptto(conn, "<" .. rcpt .. ">"), "rcpt to", SMFIR_CONTINUE)
		data(conn, SMFIR_CONTINUE)
		if received then
			step(conn, mt.header(conn, "Received", received), "header", SMFIR_CONTINUE)
		end
		step(conn, mt.header(conn, "Subject", "retry"), "header", SMFIR_CONTINUE)
		if msgid then
			step(conn, mt.header(conn, "Message-ID", msgid), "header", SMFIR_CONTINUE)
		end
		step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
		for i = 1, #text, 65535 do
			step(conn, mt.bodystring(conn, text:sub(i, i + 65534)), "body", SMFIR_CONTINUE)
		end
		step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
		mt.disconnect(conn)
	end)
end

local function count(sender)
	return "SELECT count(*) FROM message WHERE sender = '" .. sender .. "'"
end

local small = "Once only.\r\n"
-- 200 KiB: spills out of the milter's 64 KiB buffer into a spool file
local big = string.rep(string.rep("y", 1022) .. "\r\n", 200)

t:start()
send("alice's message is stored", "alice@a.example", "bob@d.example", small, "<m1@a.example>",
	"from client by mx.a.example with ESMTP id AAAA")
send("... and sent again under another queue id and Received header",
	"alice@a.example", "bob@d.example", small, "<m1@a.example>",
	"from client by mx.a.example with ESMTP id BBBB")
t:expect("stored once", "1", count("alice@a.example"))
t:logged("the retry is logged with both ids",
	"RETRY02: retry of stored id=[0-9a-f]{32} \\(this attempt's id=[0-9a-f]{32} dropped, "
	.. "the stored copy stands\\) from=<alice@a.example> to=bob@d.example")
send("to another recipient it is another message", "alice@a.example", "carol@d.example",
	small, "<m1@a.example>")
send("with another body too", "alice@a.example", "bob@d.example", "Twice.\r\n",
	"<m1@a.example>")
send("from another sender too", "mallory@a.example", "bob@d.example", small, "<m1@a.example>")
t:expect("three messages of alice's, one of mallory's", "3|1",
	"SELECT (" .. count("alice@a.example") .. "), (" .. count("mallory@a.example") .. ")")
send("without a Message-ID: stored", "carol@a.example", "bob@d.example", small, nil)
send("... and stored again", "carol@a.example", "bob@d.example", small, nil)
t:expect("carol has two messages", "2", count("carol@a.example"))
send("a big message is stored", "dave@a.example", "bob@d.example", big, "<big@a.example>")
send("... and its retry", "dave@a.example", "bob@d.example", big, "<big@a.example>")
t:expect("dave has one message", "1", count("dave@a.example"))
t:finish{ diverted = 7 }
