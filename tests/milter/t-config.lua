-- t-config.lua: -n checks a configuration and exits (0, or 78 with the
-- reason); the milter refuses to start without our domain key. No session.
dofile(testdir .. "/lib.lua")

local t = test("t-config")
local good = t:config("milter.conf")
t:sh_ok("-n accepts a good configuration", '"$1" -n -c "$2"', milter, good)

local function write(file, text)
	local path = t.dir .. "/" .. file
	local f = assert(io.open(path, "w"))
	f:write(text)
	f:close()
	return path
end

t:sh_ok("-n refuses a configuration without database",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "missing required key \\"database\\""',
	milter, write("bad.conf", "socket " .. t.sock .. "\nspool_dir " .. t.spool .. "\n"))
t:sh_ok("-n refuses a bad trusted_networks",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "trusted_networks"',
	milter, write("bad2.conf", 'database "' .. t.conn .. '"\ntrusted_networks 10.0.0.0/33\n'))
local nokey_sock = t.dir .. "/nokey.sock"
local nokey = t:config("nokey.conf", { gnupg_home = false, domain_key = false,
                                       socket = "unix:" .. nokey_sock })
t:sh_ok("-n refuses a configuration without gnupg_home and domain_key: exit 78, names both", [[
	"$1" -n -c "$2" > /dev/null 2>&1; [ $? = 78 ] || exit 1
	"$1" -n -c "$2" 2>&1 | grep -q "gnupg_home and domain_key are required (missing: both)"]],
	milter, nokey)
t:sh_ok("-n refuses domain_key without gnupg_home", [[
	"$1" -n -c "$2" > /dev/null 2>&1; [ $? = 78 ] || exit 1
	"$1" -n -c "$2" 2>&1 | grep -q "gnupg_home and domain_key are required (missing: gnupg_home)"]],
	milter, t:config("bad3.conf", { gnupg_home = false }))
t:sh_ok("the milter refuses to start without gnupg_home and domain_key: exit 78, no socket", [[
	timeout 20 "$1" -f -c "$2" > "$3" 2>&1; rc=$?
	[ "$rc" = 78 ] || { echo "exit $rc"; cat "$3"; exit 1; }
	grep -q "configuration error: .*gnupg_home and domain_key are required (missing: both)" "$3" \
		|| { cat "$3"; exit 1; }
	[ ! -e "$4" ] || { echo "socket $4 created"; exit 1; }]],
	milter, nokey, t.dir .. "/nokey.out", nokey_sock)
t:sh_ok("-n accepts gnupg_home with domain_key", '"$1" -n -c "$2"', milter,
	t:config("sealed.conf", { socket = "unix:" .. t.dir .. "/milter2.sock" }))
-- (x.example's key is in no keyring of ours)
t:sh_ok("-n refuses a domain_key that gnupg_home does not hold",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "domain_key $3 in gnupg_home"',
	milter, t:config("bad4.conf", { domain_key = fpr_x }), fpr_x)
t:sh_ok("-n refuses a resolver without port",
	'! "$1" -n -c "$2" && "$1" -n -c "$2" 2>&1 | grep -q "resolver: \\"127.0.0.1\\""',
	milter, t:config("bad5.conf", { resolver = "127.0.0.1" }))
os.execute("gpgconf --homedir " .. q(t.home) .. " --kill all 2>/dev/null")
