-- t-stream.lua: a message that outgrows the milter's 64 KiB buffer is
-- sealed while it arrives, in a thread of its own. No plaintext of it
-- reaches the spool directory at any time: every file there (tmp/ too) is
-- searched for a marker that every line of the message carries, while the
-- message streams in (once the seal's file has grown past 1 MiB) and once
-- it is stored. A message that goes mid-body, by abort or by the
-- connection closing, leaves nothing behind: no file, no row, and the
-- seal's thread has ended.
dofile(testdir .. "/lib.lua")

local t = test("t-stream")
local marker = "PLAINTEXT-MARKER-d1e5"
local line = marker .. " 0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n"
-- a body step carries at most 65535 octets
local chunk = string.rep(line, 65535 // #line)

-- The files under the spool directory that hold the marker ("" none).
local function plaintext_files()
	local _, out = sh_args('grep -rlF -- "$2" "$1" || true', t.spool, marker)
	return out
end

-- Octets in the spool's tmp/ (where a body grows until it is committed).
local function tmp_bytes()
	local _, out = sh_args('find "$1" -mindepth 2 -type f -printf "%s\\n" | '
	                       .. 'awk "{ s += \\$1 } END { print s + 0 }"', t.spool)
	return tonumber(out) or 0
end

-- Wait until cond() holds (the milter takes the body steps without a
-- reply, at its own pace); whether it did.
local function wait_until(cond)
	for _ = 1, 600 do
		if cond() then
			return true
		end
		os.execute("sleep 0.1")
	end
	return cond()
end

-- The milter's threads now.
local function threads()
	local f = io.open("/proc/" .. t.pid .. "/status", "r")
	local n = f and tonumber(f:read("a"):match("Threads:%s*(%d+)"))
	if f then
		f:close()
	end
	return n or -1
end

-- A session up to the body: MAIL FROM sender, RCPT bob@d.example, DATA,
-- a Subject with the marker, end of headers, then n body steps.
local function start_message(conn, qid, sender, n)
	check(mt.macro(conn, SMFIC_MAIL, "i", qid) == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", marker), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	for _ = 1, n do
		step(conn, mt.bodystring(conn, chunk), "body", SMFIR_CONTINUE)
	end
end

local function rows(sender)
	return "SELECT count(*) FROM message WHERE sender = '" .. sender .. "'"
end

t:start()

t:session("a 4 MiB message, its plaintext never in the spool directory", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	start_message(conn, "STREAM01", "stream@a.example", 32)
	t:ok("halfway, the seal's file grows in spool/tmp (past 1 MiB)",
	     wait_until(function() return tmp_bytes() > 1048576 end),
	     "tmp holds " .. tmp_bytes() .. " octets")
	local found = plaintext_files()
	t:ok("halfway, no file in the spool directory holds the plaintext", found == "",
	     "the marker is in: " .. found)
	for _ = 1, 32 do
		step(conn, mt.bodystring(conn, chunk), "body", SMFIR_CONTINUE)
	end
	-- all but what waits in the milter's buffer and the socket
	wait_until(function() return tmp_bytes() > 3 * 1048576 end)
	found = plaintext_files()
	t:ok("with the whole body sent, no file holds the plaintext", found == "",
	     "the marker is in: " .. found)
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)
local found = plaintext_files()
t:ok("stored, no file holds the plaintext", found == "", "the marker is in: " .. found)
t:expect("stored in a spool file named by its row", "1|t",
	"SELECT count(*), bool_and(spool_name = id AND body IS NULL) FROM message "
	.. "WHERE sender = 'stream@a.example'")
t:sealed_is("d.example decrypts it byte-exact, good signature", "stream@a.example",
	rundir .. "/gd", fpr_a, "Subject: " .. marker .. "\r\n\r\n" .. string.rep(chunk, 64))

t:session("a 4 MiB message aborted mid-body", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	local before = threads()
	start_message(conn, "STREAM02", "abort@a.example", 16)
	t:ok("its seal runs in a thread of its own, writing spool/tmp",
	     wait_until(function() return tmp_bytes() > 262144 end) and threads() == before + 1,
	     string.format("tmp holds %d octets; threads %d, %d before", tmp_bytes(), threads(),
	                   before))
	check(mt.abort(conn) == nil, "mt.abort")
	t:ok("after the abort the seal's thread ends",
	     wait_until(function() return threads() == before end),
	     string.format("threads %d, %d before", threads(), before))
	t:ok("and its file is gone", wait_until(function() return tmp_bytes() == 0 end),
	     "tmp holds " .. tmp_bytes() .. " octets")
	-- the connection goes on: the next message is diverted as any other
	step(conn, mt.mailfrom(conn, "<after@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "after"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "small\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)
t:expect("the aborted message has no row", "0", rows("abort@a.example"))
t:expect("the next message on the connection was stored", "1", rows("after@a.example"))

local idle = threads()
t:session("a 4 MiB message whose connection closes mid-body", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	start_message(conn, "STREAM03", "close@a.example", 16)
	t:ok("its seal runs, writing spool/tmp",
	     wait_until(function() return tmp_bytes() > 262144 end),
	     "tmp holds " .. tmp_bytes() .. " octets")
	mt.disconnect(conn)
end)
t:ok("after the close the seal's thread (and the connection's) ended",
     wait_until(function() return threads() == idle end),
     string.format("threads %d, %d before the connection", threads(), idle))
t:ok("and its file is gone", wait_until(function() return tmp_bytes() == 0 end),
     "tmp holds " .. tmp_bytes() .. " octets")
t:expect("the closed message has no row", "0", rows("close@a.example"))
t:finish{ diverted = 2 }
