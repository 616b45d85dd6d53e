-- lib.lua: helpers shared by the stubmail-milter miltertest scripts.
--
-- The runner (tests/milter/run) passes globals with -D:
--   sock     the milter's socket, e.g. unix:/tmp/smt.x/milter.sock
--   testdir  this directory (to find lib.lua)
--   sender   the envelope sender the script uses (the runner checks the
--            database rows by it)
--   dbstop   (t-eomfail.lua only) shell command that stops PostgreSQL
--   bigfile  (t-big.lua only) the body to send

-- A failed check raises a Lua error; run() turns it into "FAIL: ..." on
-- stdout and exit status 1 (a bare error() in miltertest exits silently).
function check(cond, what)
	if not cond then
		error(what, 2)
	end
end

local function name_of(code)
	local names = {
		[SMFIR_CONTINUE] = "continue", [SMFIR_ACCEPT] = "accept",
		[SMFIR_REJECT] = "reject", [SMFIR_TEMPFAIL] = "tempfail",
		[SMFIR_DISCARD] = "discard", [SMFIR_REPLYCODE] = "replycode",
	}
	if code == nil or code == 0 then
		return "none"
	end
	return names[code] or string.format("'%c'", code)
end

-- One protocol step: rc is what the mt.* call returned (nil = sent),
-- expect the SMFIR_* reply wanted (nil = any).
function step(conn, rc, what, expect)
	if rc ~= nil then
		error(what .. ": " .. tostring(rc), 2)
	end
	local got = mt.getreply(conn)
	if expect ~= nil and got ~= expect then
		error(string.format("%s: milter answered %s, expected %s", what,
		      name_of(got), name_of(expect)), 2)
	end
	return got
end

-- Connect as an SMTP client at ip; daemon is the {daemon_name} macro
-- (nil: not sent).
function open(ip, daemon)
	local conn = mt.connect(sock, 40, 0.25)
	check(conn ~= nil, "cannot connect to the milter at " .. tostring(sock))
	if daemon ~= nil then
		check(mt.macro(conn, SMFIC_CONNECT, "{daemon_name}", daemon) == nil,
		      "mt.macro(daemon_name) failed")
	end
	step(conn, mt.conninfo(conn, "client.example", ip), "connect", SMFIR_CONTINUE)
	if not mt.test_option(conn, SMFIP_NOHELO) then
		step(conn, mt.helo(conn, "client.example"), "helo", SMFIR_CONTINUE)
	end
	return conn
end

-- DATA, unless the milter negotiated it away.
function data(conn, expect)
	if mt.test_option(conn, SMFIP_NODATA) then
		return SMFIR_CONTINUE
	end
	return step(conn, mt.data(conn), "data", expect)
end

function run(main)
	local ok, err = pcall(main)
	if not ok then
		mt.echo("FAIL: " .. tostring(err))
		os.exit(1)
	end
	mt.echo("PASS")
end
