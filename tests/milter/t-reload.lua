-- t-reload.lua: SIGUSR1 reloads the configuration without dropping a
-- message. A message in the middle of being stored (headers sent) when the
-- reload comes finishes under the settings its connection started with:
-- its client stays trusted though the new trusted_networks leaves it out,
-- and its body goes into its row (inline_max 96k) though the new file says
-- 0 (spool file); a connection made after the reload gets the new ones. A
-- changed restart-only key (db_connections) is logged as ignored, by name.
-- The replaced settings are freed when their last connection closes, not
-- before. A bad file on reload is refused (file, line and key logged) and
-- the milter goes on with what it had. SIGHUP still stops the milter
-- (libmilter's own signal thread takes it).
dofile(testdir .. "/lib.lua")

local t = test("t-reload")
local before = { trusted_networks = '"127.0.0.1/32, 192.0.2.0/24"', inline_max = "96k" }
local after = { trusted_networks = "127.0.0.1/32", inline_max = "0", db_connections = "3" }
local conf = t:config("milter.conf", before)

-- Wait (up to 20 s) until the log has a line matching ere; true if it came.
local function log_has(ere)
	for _ = 1, 200 do
		if sh_args('grep -Eq "$2" "$1"', t.log, ere) then
			return true
		end
		os.execute("sleep 0.1")
	end
	return false
end

local function count(ere)
	local _, n = sh_args('grep -Ec "$2" "$1"', t.log, ere)
	return tonumber(n)
end

-- Up to end of header of a message from sender to bob@b.example (pulling).
local function begin(conn, sender)
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from " .. sender, SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "reload"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
end

local function finish_message(conn, what)
	step(conn, mt.bodystring(conn, "Stored whatever the reload said.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom " .. what, SMFIR_DISCARD)
end

local function spool_name_of(sender)
	return "SELECT coalesce(spool_name, 'row') FROM message WHERE sender = '" .. sender .. "'"
end

t:start(nil, conf)

local held
t:session("a message is under way from 192.0.2.10, trusted by the file the milter started with",
	function()
		held = open("192.0.2.10", nil)
		begin(held, "ann@a.example")
	end)

t:config("milter.conf", after)
os.execute("kill -USR1 " .. t.pid)
t:ok("SIGUSR1: reload 1 logged, naming what changed",
	log_has("reload 1 of .*milter.conf: changed .*trusted_networks.*inline_max"),
	select(2, sh("tail -5 " .. q(t.log))))
t:logged("the changed restart-only key is logged as ignored, by name",
	"reload of .*milter.conf: db_connections changed, ignored: only a restart applies it")
t:ok("the settings of the start are not freed while a connection holds them",
	count("the settings of the start are freed") == 0)

t:session("a connection after the reload gets the new trusted_networks: 192.0.2.10 is inbound",
	function()
		local conn = open("192.0.2.10", nil)
		step(conn, mt.mailfrom(conn, "<ben@a.example>"), "mail from", SMFIR_ACCEPT)
		mt.disconnect(conn)
	end)

t:session("a connection after the reload stores under the new inline_max", function()
	local conn = open("198.51.100.7", "ORIGINATING")
	begin(conn, "cat@a.example")
	finish_message(conn, "cat")
	mt.disconnect(conn)
end)

t:session("the message under way finishes under the settings it started with", function()
	finish_message(held, "ann")
	mt.disconnect(held)
end)

t:expect("ann's message, under way at the reload, is stored, its body in its row (96k)",
	"row", spool_name_of("ann@a.example"))
t:expect("cat's message, after the reload, has its body in a spool file (inline_max 0)",
	"1", "SELECT count(*) FROM message WHERE sender = 'cat@a.example' AND spool_name IS NOT NULL")
t:expect("nothing of ben's inbound mail", "0",
	"SELECT count(*) FROM message WHERE sender = 'ben@a.example'")
t:ok("the settings of the start are freed once the message's connection has closed",
	log_has("the settings of the start are freed: the last connection"))

-- a bad value: refused, naming file, line and key; a bad list: the same,
-- from the check beyond syntax (the -n path)
t:config("milter.conf", { trusted_networks = "127.0.0.1/32",
	inline_max = "0", quota_messages = "lots" })
os.execute("kill -USR1 " .. t.pid)
t:ok("a file with a bad value is refused: file, line and key logged",
	log_has("reload of .*milter.conf refused, the settings in use stay: "
	        .. ".*milter.conf:[0-9]+: quota_messages: \"lots\" is not"),
	select(2, sh("tail -5 " .. q(t.log))))
t:config("milter.conf", { trusted_networks = "127.0.0.1/32, 300.1.2.3/8", inline_max = "0" })
os.execute("kill -USR1 " .. t.pid)
t:ok("a file the checks refuse is refused: file, line and key logged",
	log_has("reload of .*milter.conf refused, the settings in use stay: "
	        .. ".*milter.conf:[0-9]+: trusted_networks: "),
	select(2, sh("tail -5 " .. q(t.log))))
t:ok("no reload 2: the settings of reload 1 stay", count("reload 2 of") == 0)
t:sh_ok("the milter still runs", 'kill -0 "$1"', t.pid)

t:session("after the refused reloads: reload 1's trusted_networks still hold", function()
	local conn = open("192.0.2.10", nil)
	step(conn, mt.mailfrom(conn, "<ben@a.example>"), "mail from", SMFIR_ACCEPT)
	mt.disconnect(conn)
end)
t:session("after the refused reloads: mail is stored as reload 1 says", function()
	local conn = open("198.51.100.7", "ORIGINATING")
	begin(conn, "dan@a.example")
	finish_message(conn, "dan")
	mt.disconnect(conn)
end)
t:expect("dan's message stored, its body in a spool file", "1",
	"SELECT count(*) FROM message WHERE sender = 'dan@a.example' AND spool_name IS NOT NULL")

-- SIGHUP stops, as before: libmilter's signal thread takes it (finish
-- then wants exit status 0; a milter that did not stop gets SIGTERM)
os.execute("kill -HUP " .. t.pid)
local stopped = log_has(": stopped$")
t:ok("SIGHUP stops the milter, and does not reload it", stopped and count("reload 2 of") == 0,
	select(2, sh("tail -5 " .. q(t.log))))
if not stopped then
	os.execute("kill -TERM " .. t.pid)
end
t:finish{ diverted = 3, errors = { "reload of " }, signal = "HUP" }
