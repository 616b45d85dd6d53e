-- t-hdrfail.lua: the milter answers headers, end of header and body with no
-- reply (SMFIP_NR_*). A header that cannot be kept (here: the headers
-- outgrow the message's buffer while the spool directory is gone, so the
-- seal that would take them as they arrive has no file to write) cannot be
-- refused at its own step: the failure is carried
-- to end of message, which answers 451 4.3.0 with the log line it would
-- have had at the header, removes no recipient and stores nothing, not a
-- message without its lost headers. The next message on the connection is
-- diverted as usual. An MTA of milter protocol 2 is answered alike.
dofile(testdir .. "/lib.lua")

local t = test("t-hdrfail")
local gone = t.spool .. ".gone"
-- 80 headers of 900 octets (miltertest smashes its stack on 4,000):
-- more than the 64 KiB buffer
local big = string.rep("x", 900)
local reply = "stubmail: cannot store message, try again later"
t:start()

-- The spool directory away for the headers, back for end of message: a
-- milter that forgot the failure would seal what it kept of the message.
local function spool_away()
	check(os.execute("mv " .. q(t.spool) .. " " .. q(gone)), "cannot move the spool away")
end
local function spool_back()
	check(os.execute("mv " .. q(gone) .. " " .. q(t.spool)), "cannot put the spool back")
end

-- With no reply to headers and end of header, nothing tells miltertest
-- when the milter has handled them: the spool must stay away until it has.
-- libmilter reads a command only when it is done with the one before, so
-- once nothing is left unread on the milter's end of the connection (its
-- Recv-Q in ss), every command sent before the last has been handled.
local function milter_read_all()
	local unread = "ss -xHn | awk -v p=" .. q(t.sock_path) .. " '$5 == p && $3 != 0' | grep -q ."
	for _ = 1, 600 do
		if not os.execute(unread) then
			return
		end
		os.execute("sleep 0.05")
	end
	check(false, "the milter left what was sent unread for 30 s")
end

t:session("header failure without a reply: 451 4.3.0 at end of message", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	for _, s in ipairs({ { SMFIP_NR_CONN, "connect" }, { SMFIP_NR_HDR, "header" },
	                     { SMFIP_NR_EOH, "end of header" }, { SMFIP_NR_BODY, "body" } }) do
		check(mt.test_option(conn, s[1]), "the milter did not ask for no reply to " .. s[2])
	end
	check(not mt.test_option(conn, SMFIP_NR_DATA), "the milter asked for no reply to DATA")
	check(mt.macro(conn, SMFIC_MAIL, "i", "HDRFAIL01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<hdrfail@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	spool_away()
	for i = 1, 80 do
		step(conn, mt.header(conn, "X-Big-" .. i, big), "header " .. i, SMFIR_CONTINUE)
	end
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	milter_read_all()               -- the headers handled, the seal failed to start
	spool_back()
	step(conn, mt.bodystring(conn, "Never stored.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom", SMFIR_REPLYCODE)
	check(mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0", reply),
	      "eom: not the expected 451 4.3.0 reply")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<bob@b.example>"),
	      "a recipient was removed although nothing was stored")

	-- the next message on the connection starts clean
	check(mt.macro(conn, SMFIC_MAIL, "i", "HDRFAIL02") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<hdrnext@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "after"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Stored.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)
t:logged("the header's failure logged at end of message, with queue id, sender and reply",
	"HDRFAIL01: from=<hdrfail@a.example>: cannot create spool file in .*/spool: "
	.. "No such file or directory; answered 451 4.3.0")
t:expect("nothing stored for the refused message, the next one stored", "0|1",
	[[SELECT (SELECT count(*) FROM message WHERE sender = 'hdrfail@a.example'),
	         (SELECT count(*) FROM message WHERE sender = 'hdrnext@a.example')]])

-- An MTA that offers protocol 2's steps only (no NR_*: libmilter speaks
-- for the milter there): every step goes on, and the refusal comes at end
-- of message all the same.
t:session("an MTA that wants a reply per step: continue, then 451 4.3.0 at end of message",
          function()
	local conn = mt.connect(sock, 40, 0.25)
	check(conn ~= nil, "cannot connect to the milter")
	check(mt.negotiate(conn, 2, 0x1ff, 0x7f) == nil, "mt.negotiate(version 2)")
	check(mt.macro(conn, SMFIC_CONNECT, "{daemon_name}", "ORIGINATING") == nil, "mt.macro")
	step(conn, mt.conninfo(conn, "client.example", "192.0.2.10"), "connect", SMFIR_CONTINUE)
	check(mt.macro(conn, SMFIC_MAIL, "i", "HDRFAIL03") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<hdrv2@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	spool_away()
	for i = 1, 80 do
		step(conn, mt.header(conn, "X-Big-" .. i, big), "header " .. i, SMFIR_CONTINUE)
	end
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	spool_back()
	step(conn, mt.bodystring(conn, "Never stored.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom", SMFIR_REPLYCODE)
	check(mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0", reply),
	      "eom: not the expected 451 4.3.0 reply")
	mt.disconnect(conn)
end)
t:logged("its failure logged at end of message too",
	"HDRFAIL03: from=<hdrv2@a.example>: cannot create spool file in .*/spool: "
	.. "No such file or directory; answered 451 4.3.0")
t:expect("nothing stored for it", "0",
	"SELECT count(*) FROM message WHERE sender = 'hdrv2@a.example'")
t:finish{ diverted = 1, errors = { "from=<hdrfail@a.example>", "from=<hdrv2@a.example>" } }
