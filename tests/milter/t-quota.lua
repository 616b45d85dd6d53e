-- t-quota.lua: every local sender's outbox quota (quota_messages,
-- quota_bytes, sender_quota overrides; sql/011). A message that would go
-- over is refused 552 5.2.2 (SMFIR_REPLYCODE): at MAIL FROM when its SIZE=
-- alone would, else at end of message, and leaves nothing behind: no row,
-- no spool file (the one a big message was sealed into as it arrived
-- neither). Mail retrieved by every recipient
-- stops counting; an override replaces the default; and a store that
-- waits for another session's store of the same sender counts it.
dofile(testdir .. "/lib.lua")

local t = test("t-quota")
-- 2 messages, 1 MiB by default
local conf = t:config("milter.conf", { quota_messages = "2", quota_bytes = "1M" })
local qids = 0

-- One message from sender to bob@d.example (body: text, in 65535-octet
-- steps), its SIZE= parameter (nil: none); want is what MAIL FROM and end
-- of message answer: "stored", "refused at mail from", "refused at eom".
local function send(name, sender, text, size, want)
	t:session(name, function()
		qids = qids + 1
		local conn = open("192.0.2.10", "ORIGINATING")
		check(mt.macro(conn, SMFIC_MAIL, "i", string.format("QUOTA%02d", qids)) == nil,
		      "mt.macro(i)")
		local rc
		if size then
			rc = mt.mailfrom(conn, "<" .. sender .. ">", "SIZE=" .. size)
		else
			rc = mt.mailfrom(conn, "<" .. sender .. ">")
		end
		if want == "refused at mail from" then
			step(conn, rc, "mail from", SMFIR_REPLYCODE)
			mt.disconnect(conn)
			return
		end
		step(conn, rc, "mail from", SMFIR_CONTINUE)
		step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
		data(conn, SMFIR_CONTINUE)
		step(conn, mt.header(conn, "Subject", "quota"), "header", SMFIR_CONTINUE)
		step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
		for i = 1, #text, 65535 do
			step(conn, mt.bodystring(conn, text:sub(i, i + 65534)), "body", SMFIR_CONTINUE)
		end
		step(conn, mt.eom(conn), "eom",
		     want == "stored" and SMFIR_DISCARD or SMFIR_REPLYCODE)
		mt.disconnect(conn)
	end)
end

local function count(sender)
	return "SELECT count(*) FROM message WHERE sender = '" .. sender .. "'"
end

local small = "Waiting for bob.\r\n"
-- 200 KiB: outgrows the milter's 64 KiB buffer, sealed into a spool file
-- as it arrives
local big = string.rep(string.rep("x", 1022) .. "\r\n", 200)

t:start(nil, conf)
send("alice's first message is stored", "alice@a.example", small, nil, "stored")
send("alice's second, SIZE=1000, is stored", "alice@a.example", small, 1000, "stored")
send("alice's third (sealed as it arrived, no SIZE=) is refused at end of message",
	"alice@a.example", big, nil, "refused at eom")
t:expect("alice has two messages, the refused one has no row", "2", count("alice@a.example"))
t:spool_empty("no spool file left: the body sealed as it arrived is gone")
t:logged("the refusal is logged with the sender, the size and the use",
	"QUOTA03: from=<alice@a.example>: over quota at end of message: size=[0-9]{6} "
	.. "waiting=2 messages, [0-9]+ bytes; quota=2 messages, 1048576 bytes; answered 552 5.2.2")
t:logged("... as info, not as an error",
	"info: QUOTA03: from=<alice@a.example>: over quota")
send("SIZE=1048577 alone is over 1 MiB: refused at MAIL FROM", "alice@a.example", small,
	1048577, "refused at mail from")
t:logged("the MAIL FROM refusal is logged with the size and the use",
	"QUOTA04: from=<alice@a.example>: over quota at MAIL FROM \\(SIZE=\\): size=1048577 "
	.. "waiting=2 messages, [0-9]+ bytes; quota=2 messages, 1048576 bytes; answered 552 5.2.2")
t:expect("sender_usage shows alice's two messages and their octets", "2|t",
	"SELECT messages, bytes = (SELECT sum(size) FROM message WHERE sender = 'alice@a.example')"
	.. " FROM sender_usage WHERE sender = 'alice@a.example'")

-- bob fetched the first message and acked it: it stops counting
t:sql("UPDATE outbox SET retrieved_at = now() WHERE message_id = "
	.. "(SELECT min(id) FROM message WHERE sender = 'alice@a.example')")
t:expect("retrieved: sender_usage counts one message", "1",
	"SELECT messages FROM sender_usage WHERE sender = 'alice@a.example'")
send("after the ack alice can send again", "alice@a.example", small, 1000, "stored")
send("... and is full again", "alice@a.example", small, nil, "refused at eom")

-- overrides: carol may have 3 messages; dave 1000 octets, any number
t:sql("INSERT INTO sender_quota (address, max_messages, max_bytes) VALUES "
	.. "('carol@a.example', 3, NULL), ('dave@a.example', 0, 1000)")
for i = 1, 3 do
	send("carol's override: message " .. i .. " of 3 is stored", "carol@a.example", small,
	     nil, "stored")
end
send("carol's fourth is refused", "carol@a.example", small, nil, "refused at eom")
send("dave's override: SIZE=1001 is over his 1000 octets at MAIL FROM", "dave@a.example",
	small, 1001, "refused at mail from")
send("dave's override: a 200 KiB message without SIZE= is refused at end of message",
	"dave@a.example", big, nil, "refused at eom")
t:expect("carol has 3 messages, dave none", "3|0",
	"SELECT (" .. count("carol@a.example") .. "), (" .. count("dave@a.example") .. ")")
t:spool_empty("still no spool file")

-- two sessions at once: erin has one message; a session of its own stores
-- her second (her quota: 2) and holds its transaction open; the milter's
-- store of a third waits for the commit and must count the second
send("erin's first message is stored", "erin@a.example", small, nil, "stored")
local other = t.dir .. "/other.sql"
local f = assert(io.open(other, "w"))
f:write("BEGIN;\n",
	"SELECT stored FROM outbox_store_quota(md5('erin2'), 'erin@a.example', 1, NULL, 'openpgp',",
	" ARRAY['bob@d.example'], ARRAY['d.example'], '{}', '{}', 'x'::bytea, 2, 0);\n",
	"SELECT pg_sleep(2);\n",
	"COMMIT;\n")
f:close()
-- (the wait is for the other session's store to be done, not for its lock:
-- without the lock the milter's store would not wait, and this test fails)
t:sh_ok("another session has stored erin's second message, not committed yet", [[
	psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -f "$2" > "$3" 2>&1 &
	for i in $(seq 100); do
		n=$(psql -X -q -t -A -d "$1" -c "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(2);'")
		[ "$n" = 1 ] && exit 0
		sleep 0.1
	done
	echo "the other session never stored"; cat "$3"; exit 1]], t.conn, other,
	t.dir .. "/other.out")
send("erin's third, stored while the second commits, is refused", "erin@a.example", small, nil,
	"refused at eom")
t:sh_ok("the other session committed", [[
	for i in $(seq 100); do
		n=$(psql -X -q -t -A -d "$1" -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2);' AND state = 'active'")
		[ "$n" = 0 ] && exit 0
		sleep 0.1
	done
	exit 1]], t.conn)
t:expect("erin has two messages, not three", "2", count("erin@a.example"))
t:finish{ diverted = 7 }
