-- t-loglevel.lua: log_level and log_facility. -n refuses a facility or a
-- level it does not know, naming the key and the choices. With log_level
-- warning a diverted message is stored as ever but its info line (and the
-- start's) is not written, while a warning still is; with log_level debug
-- the connect lines appear.
dofile(testdir .. "/lib.lua")

local t = test("t-loglevel")
t:sh_ok("-n refuses an unknown log_facility, naming it",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "log_facility: \\"mial\\" is not a syslog facility"',
	milter, t:config("bad1.conf", { log_facility = "mial" }))
t:sh_ok("-n refuses an unknown log_level, naming it",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "log_level: \\"verbose\\" is not a log level"',
	milter, t:config("bad2.conf", { log_level = "verbose" }))
t:sh_ok("-n takes local3 and debug", '"$1" -n -c "$2"', milter,
	t:config("good.conf", { log_facility = "local3", log_level = "debug" }))

local function divert(qid)
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", qid) == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<lv@a.example>"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "levels"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Quiet.\r\n"), "body", SMFIR_CONTINUE)
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end

t:start("log_level warning", t:config("warning.conf", { log_level = "warning",
                                                         trusted_networks = "198.51.100.0/24" }))
t:session("a diverted message", function() divert("LVL01") end)
t:session("a connection without {daemon_name}: a warning", function()
	local conn = open("203.0.113.7", nil)
	-- a step with a reply: the milter has seen the connect by then
	step(conn, mt.mailfrom(conn, "<x@a.example>"), "mail from", SMFIR_ACCEPT)
	mt.disconnect(conn)
end)
t:expect("stored", "1", "SELECT count(*) FROM message WHERE sender = 'lv@a.example'")
t:sh_ok("no info line: not the start's, not the message's", '! grep -q ": info: " "$1"', t.log)
t:logged("the warning is written", "warning: connect from \\[203.0.113.7\\]: the MTA sends no")
t:finish{ diverted = 0 }
