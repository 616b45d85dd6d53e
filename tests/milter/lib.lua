-- lib.lua: what the stubmail-milter miltertest scripts share. A t-*.lua
-- script is a whole test: it makes its own database (a copy of the
-- migrated template), spool directory and keyring, starts its own milter,
-- talks to it, checks the rows, files and log lines, and stops it. Scripts
-- do not depend on each other or on their order.
--
-- The runner (tests/milter/run) starts what all tests share and passes
-- globals with -D:
--   testdir   this directory (to find lib.lua)
--   rundir    the run's directory (/tmp/smt.XXXXXX, short: socket paths)
--   milter    the stubmail-milter binary; wrapper: a tool to run it under
--   pgconn    libpq conninfo of the cluster without dbname
--   template  the migrated database each test copies (peers b.example,
--             pinned key, and c.example, opted out)
--   resolver  the dnsmasq serving the _stubmail records (IP:PORT)
--   dnsstop   shell command that stops that dnsmasq (the runner starts it
--             again after the test)
--   dbstop, dbstart  shell commands that stop and start PostgreSQL
--   fpr_a .. fpr_x   fingerprints of the domain keys; rundir/ga is
--             a.example's keyring (ours), gb, gd, gg the receivers'
--   httplog, dnslog  the outboxes' and dnsmasq's logs
--
-- A test reports TAP lines "ok - NAME" / "not ok - NAME" (the runner
-- numbers them) and exits 0; a Lua error ends it with status 1, which the
-- runner reports as a failure too.

-- A failed check raises a Lua error; session() turns it into "not ok".
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

-- Connect as an SMTP client at ip to the test's milter; daemon is the
-- {daemon_name} macro (nil: not sent); host the client's name
-- (client.example if nil).
function open(ip, daemon, host)
	host = host or "client.example"
	local conn = mt.connect(sock, 40, 0.25)
	check(conn ~= nil, "cannot connect to the milter at " .. tostring(sock))
	if daemon ~= nil then
		check(mt.macro(conn, SMFIC_CONNECT, "{daemon_name}", daemon) == nil,
		      "mt.macro(daemon_name) failed")
	end
	step(conn, mt.conninfo(conn, host, ip), "connect", SMFIR_CONTINUE)
	if not mt.test_option(conn, SMFIP_NOHELO) then
		step(conn, mt.helo(conn, host), "helo", SMFIR_CONTINUE)
	end
	return conn
end

-- One message on conn, then disconnect: m.id the queue id, m.from, m.to
-- (bob@b.example if nil), m.subject, m.body. The steps after MAIL FROM run
-- only if the milter continued there. Returns its last answer (at MAIL
-- FROM, or at the end of the message).
function submit(conn, m)
	check(mt.macro(conn, SMFIC_MAIL, "i", m.id) == nil, "mt.macro(i)")
	local r = step(conn, mt.mailfrom(conn, "<" .. m.from .. ">"), "mail from", nil)
	if r == SMFIR_CONTINUE then
		step(conn, mt.rcptto(conn, "<" .. (m.to or "bob@b.example") .. ">"), "rcpt to",
		     SMFIR_CONTINUE)
		data(conn, SMFIR_CONTINUE)
		step(conn, mt.header(conn, "Subject", m.subject), "header", SMFIR_CONTINUE)
		step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
		step(conn, mt.bodystring(conn, m.body), "body", SMFIR_CONTINUE)
		r = step(conn, mt.eom(conn), "eom", nil)
	end
	mt.disconnect(conn)
	return r
end

-- DATA, unless the milter negotiated it away.
function data(conn, expect)
	if mt.test_option(conn, SMFIP_NODATA) then
		return SMFIR_CONTINUE
	end
	return step(conn, mt.data(conn), "data", expect)
end

-- ---- the shell, psql ------------------------------------------------------

-- s quoted for sh.
function q(s)
	return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

-- Run a shell command: true when it exits 0, and its output (both streams).
function sh(cmd)
	local f = io.popen("(" .. cmd .. ") 2>&1", "r")
	local out = f:read("a")
	local ok = f:close()
	return ok == true, out
end

-- sh "script" with positional arguments $1...
function sh_args(script, ...)
	local cmd = "sh -c " .. q(script) .. " -"
	for _, a in ipairs({...}) do
		cmd = cmd .. " " .. q(a)
	end
	return sh(cmd)
end

local function psql(conninfo, query)
	local f = io.popen("psql -X -q -t -A -v ON_ERROR_STOP=1 -d " .. q(conninfo) .. " -c "
	                   .. q(query) .. " 2>> " .. q(rundir .. "/psql.err"), "r")
	local out = f:read("a")
	local ok = f:close()
	return (out:gsub("\n$", "")), ok == true
end

local function lines_of(path)
	local n = 0
	local f = io.open(path, "r")
	if f then
		for _ in f:lines() do
			n = n + 1
		end
		f:close()
	end
	return n
end

local function write_file(path, bytes)
	local f = assert(io.open(path, "wb"))
	f:write(bytes)
	f:close()
end

-- ---- a test ----------------------------------------------------------------

local Test = {}
Test.__index = Test

-- The keys of the milter's configuration, in the order written.
local conf_keys = { "socket", "database", "spool_dir", "originating_daemon",
	"trusted_networks", "db_connections", "resolver", "gnupg_home", "domain_key",
	"allow_http", "key_timeout" }

-- test(NAME): a fresh database, spool and keyring for test NAME (the
-- script's name without .lua); sets the global sock for open().
function test(name)
	local t = setmetatable({ name = name, dir = rundir .. "/" .. name, failed = 0 }, Test)
	t.db = "t_" .. name:gsub("%W", "_")
	t.conn = pgconn .. " dbname=" .. t.db
	t.spool = t.dir .. "/spool"
	t.home = t.dir .. "/g"
	t.log = t.dir .. "/milter.log"
	t.sock_path = t.dir .. "/milter.sock"
	t.sock = "unix:" .. t.sock_path
	sock = t.sock
	local ok, out = sh("rm -rf " .. q(t.dir) .. " && mkdir -p " .. q(t.spool)
	                   .. " && cp -a " .. q(rundir .. "/ga") .. " " .. q(t.home)
	                   .. " && rm -f " .. q(t.home) .. "/S.*")
	check(ok, "cannot make " .. t.dir .. ": " .. out)
	local _, created = psql(pgconn .. " dbname=postgres", "CREATE DATABASE " .. t.db
	                        .. " TEMPLATE " .. template)
	check(created, "cannot create database " .. t.db .. " (see psql.err)")
	-- what the shared servers logged before this test
	t.http_mark = lines_of(httplog)
	t.dns_mark = lines_of(dnslog)
	return t
end

function Test:ok(name, pass, diag)
	io.write((pass and "ok - " or "not ok - ") .. self.name .. ": " .. name .. "\n")
	if not pass then
		self.failed = self.failed + 1
		if diag ~= nil and diag ~= "" then
			for l in (tostring(diag):gsub("\n$", "") .. "\n"):gmatch("(.-)\n") do
				io.write("#   " .. l .. "\n")
			end
		end
	end
	io.flush()
	return pass
end

-- A miltertest session (fn) as one check.
function Test:session(name, fn)
	local ok, err = pcall(fn)
	return self:ok(name, ok, err)
end

-- The shell script (sh -c script - ...) exits 0.
function Test:sh_ok(name, script, ...)
	local ok, out = sh_args(script, ...)
	return self:ok(name, ok, out)
end

-- The query's output (psql -t -A: rows on lines, columns split by |), and
-- whether it succeeded.
function Test:sql(query)
	return psql(self.conn, query)
end

-- The query's output is want.
function Test:expect(name, want, query)
	local got = self:sql(query)
	return self:ok(name, got == want, string.format("expected: %s\ngot:      %s",
	               want:gsub("\n", " "), (got:gsub("\n", " "))))
end

-- Write the configuration file FILE (in the test's directory) of the
-- test's milter, with the values of set (key = value, or false to leave
-- the key out; keys not in conf_keys are added). Returns its path.
function Test:config(file, set)
	local values = {
		socket = self.sock,
		database = '"' .. self.conn .. ' connect_timeout=3"',
		spool_dir = self.spool,
		originating_daemon = "ORIGINATING",
		trusted_networks = "127.0.0.1/32, ::1/128, 2001:db8::/32",
		db_connections = "2",
		resolver = resolver,
		gnupg_home = self.home,
		domain_key = fpr_a,
		allow_http = "yes",
		key_timeout = "5s",
	}
	local text, seen = "# written by tests/milter/lib.lua\n", {}
	set = set or {}
	for _, k in ipairs(conf_keys) do
		local v = values[k]
		if set[k] ~= nil then
			v = set[k]
		end
		if v then
			text = text .. k .. " " .. v .. "\n"
		end
		seen[k] = true
	end
	for k, v in pairs(set) do
		if not seen[k] and v then
			text = text .. k .. " " .. v .. "\n"
		end
	end
	local path = self.dir .. "/" .. file
	write_file(path, text)
	return path
end

-- Start the test's milter (-f, logging to self.log) with the configuration
-- conf (default: Test:config's), and check that it listens.
function Test:start(note, conf)
	conf = conf or self:config("milter.conf")
	local cmd = string.format("%s %s -f -c %s 2> %s & echo $!; wait $!; echo $?",
	                          wrapper or "", q(milter), q(conf), q(self.log))
	self.proc = io.popen("sh -c " .. q(cmd), "r")
	self.pid = self.proc:read("l")
	-- for the runner, which stops a milter that a failed script left running
	write_file(self.dir .. "/milter.pid", self.pid .. "\n")
	-- A Lua error ends the script, and miltertest closes the pipe above,
	-- which waits for the milter: stop it first. Set after io.popen, this
	-- finalizer runs before the pipe's own.
	self.guard = setmetatable({}, { __gc = function()
		if self.proc ~= nil then
			os.execute("kill -TERM " .. self.pid)
		end
	end })
	for _ = 1, 300 do
		if os.execute("test -S " .. q(self.sock_path)) then
			break
		end
		if not os.execute("kill -0 " .. self.pid .. " 2>/dev/null") then
			break
		end
		os.execute("sleep 0.1")
	end
	local listening = os.execute("test -S " .. q(self.sock_path)) == true
	self:ok("milter listens on its socket" .. (note and " (" .. note .. ")" or ""), listening,
	        select(2, sh("cat " .. q(self.log))))
	check(listening, "milter did not start")
end

-- SIGTERM (or signal, "HUP") to the milter; its exit status.
function Test:stop(signal)
	if self.proc == nil then
		return nil
	end
	-- quiet: a test may have stopped it already
	os.execute("kill -" .. (signal or "TERM") .. " " .. self.pid .. " 2>/dev/null")
	local status = self.proc:read("l")
	self.proc:close()
	self.proc = nil
	os.remove(self.dir .. "/milter.pid")
	return tonumber(status)
end

-- The milter's peak memory (VmHWM, kB).
function Test:hwm()
	local f = io.open("/proc/" .. self.pid .. "/status", "r")
	local kb
	if f then
		kb = tonumber(f:read("a"):match("VmHWM:%s*(%d+)"))
		f:close()
	end
	return kb or 0
end

-- Committed spool files, and files left in spool/tmp.
function Test:spool_files()
	local _, n = sh("find " .. q(self.spool) .. " -maxdepth 1 -type f | wc -l")
	local _, tmp = sh("find " .. q(self.spool) .. " -mindepth 2 -type f | wc -l")
	return tonumber(n), tonumber(tmp)
end

-- No spool file, committed or in tmp: nothing was written, or it is gone.
function Test:spool_empty(name)
	local files, tmp = self:spool_files()
	return self:ok(name, files == 0 and tmp == 0, string.format("files %s, tmp %s", files, tmp))
end

-- GET /DIR/v1/key requests the outboxes answered during this test.
function Test:key_gets(dir)
	local _, n = sh_args('tail -n +$(($2 + 1)) "$1" | grep -c "\\"GET /$3/v1/key HTTP/1.1\\" 200"',
	                    httplog, self.http_mark, dir)
	return tonumber(n)
end

-- TXT queries for _stubmail.DOMAIN dnsmasq got during this test.
function Test:dns_queries(domain)
	local _, n = sh_args('tail -n +$(($2 + 1)) "$1" | grep -c "query\\[TXT\\] _stubmail.$3 "',
	                    dnslog, self.dns_mark, domain)
	return tonumber(n)
end

-- The log has a line matching the extended regular expression ere.
function Test:logged(name, ere)
	return self:sh_ok(name, 'grep -Eq "$2" "$1"', self.log, ere)
end

-- SENDER's only message is stored as OpenPGP (format, size), in its row or
-- its spool file, and, decrypted in HOME, is exactly want with a good
-- signature by the primary key SIGNER.
function Test:sealed_is(name, sender, home, signer, want)
	local where = "WHERE sender = '" .. sender .. "' AND format = 'openpgp'"
	local spool_name = self:sql("SELECT spool_name FROM message " .. where)
	local size = self:sql("SELECT size FROM message WHERE sender = '" .. sender .. "'")
	local expected = self.dir .. "/expected"
	local path = self.spool .. "/" .. spool_name
	if spool_name == "" then
		-- the body in the row (sql/010): written out for gpg
		path = self.dir .. "/inline.body"
		write_file(path .. ".b64", self:sql("SELECT encode(body, 'base64') FROM message "
		                                    .. where .. " AND body IS NOT NULL"))
		os.execute("base64 -d " .. q(path .. ".b64") .. " > " .. q(path))
	end
	write_file(expected, want)
	return self:sh_ok(name, [[
		path=$1 size=$2 home=$3 signer=$4 want=$5 out=$6
		[ -s "$path" ] || { echo "no openpgp body in the row or the spool: '$path'"; exit 1; }
		[ "$(stat -c %s "$path")" = "$size" ] || { echo "size $size, body $(stat -c %s "$path")"; exit 1; }
		rm -f "$out"
		gpg --homedir "$home" --batch --status-fd 3 --decrypt -o "$out" "$path" \
			3> "$out.status" 2> "$out.err" || { cat "$out.err"; exit 1; }
		grep -Eq "^\[GNUPG:\] VALIDSIG .* $signer\$" "$out.status" \
			|| { echo "no good signature by $signer:"; cat "$out.status"; exit 1; }
		grep -q '^\[GNUPG:\] GOODSIG ' "$out.status" || { cat "$out.status"; exit 1; }
		cmp "$want" "$out" || { echo "--- decrypted:"; od -c "$out" | head -20; exit 1; }
		rm -f "$out" "$want"]], path, size, home, signer, expected, self.dir .. "/decrypted")
end

-- The checks every test ends with: diverted messages each logged once
-- (as openpgp), no error lines but the expected ones (plain substrings),
-- the milter exits 0 on SIGTERM (opts.signal: another, "HUP"), and what is
-- in the spool is what the rows name. Then the test's gpg-agent is stopped and the log shown on failure.
function Test:finish(opts)
	local diverted, errors = opts.diverted or 0, opts.errors or {}
	local _, all = sh("grep -c ': diverted id=' " .. q(self.log))
	local _, sealed = sh("grep -c ': diverted id=.* format=openpgp' " .. q(self.log))
	self:ok(string.format("one 'diverted' log line per diverted message (%d), format openpgp",
	                      diverted),
	        tonumber(all) == diverted and tonumber(sealed) == diverted,
	        string.format("%s diverted lines, %s as openpgp", all:gsub("\n", ""),
	                      (sealed:gsub("\n", ""))))
	local unexpected = {}
	local f = io.open(self.log, "r")
	for line in f:lines() do
		if line:find(": error: ", 1, true) then
			local known = false
			for _, e in ipairs(errors) do
				known = known or line:find(e, 1, true) ~= nil
			end
			if not known then
				unexpected[#unexpected + 1] = line
			end
		end
	end
	f:close()
	self:ok("no error lines except the expected ones", #unexpected == 0,
	        table.concat(unexpected, "\n"))
	local signal = opts.signal or "TERM"
	local status = self:stop(signal)
	self:ok("milter exits 0 on SIG" .. signal
	        .. ((wrapper or "") ~= "" and " (under " .. wrapper .. ")" or ""),
	        status == 0, "exit status " .. tostring(status))
	local files, tmp = self:spool_files()
	local rows = self:sql("SELECT count(*) FROM message WHERE spool_name IS NOT NULL")
	self:ok("spool: one committed file per message row that names one, nothing left in tmp",
	        tostring(files) == rows and tmp == 0,
	        string.format("files %s, rows %s, tmp %s", files, rows, tmp))
	os.execute("gpgconf --homedir " .. q(self.home) .. " --kill all 2>/dev/null")
	if self.failed > 0 then
		local _, log = sh("sed 's/^/#   /' " .. q(self.log))
		io.write("# " .. self.log .. ":\n" .. log)
	end
	io.flush()
end
