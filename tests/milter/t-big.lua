-- t-big.lua: a large message (MILTER_BIG_MB MiB, default 32, streamed in
-- 65535-octet chunks, the most one milter body step carries) to a pulling
-- domain with sealing on: the milter's memory stays flat and the stored
-- body decrypts to exactly what was sent.
dofile(testdir .. "/lib.lua")

local t = test("t-big")
local sender = "big@a.example"
local mb = tonumber(big_mb) or 32
local bigfile = t.dir .. "/big.body"
local line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ!?\r\n"
local f = assert(io.open(bigfile, "wb"))
local lines = mb * 1024 * 1024 // #line
local block = string.rep(line, 1000)
for _ = 1, lines // 1000 do
	f:write(block)
end
f:write(string.rep(line, lines % 1000))
f:close()
t:start()

local before = t:hwm()
t:session(string.format("a %d MiB message to a pulling domain, sealed", mb), function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "BIG01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "big"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	local body = assert(io.open(bigfile, "rb"))
	while true do
		local chunk = body:read(65535)
		if chunk == nil then
			break
		end
		step(conn, mt.bodystring(conn, chunk), "body", SMFIR_CONTINUE)
	end
	body:close()
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)
local after = t:hwm()
if (wrapper or "") == "" then
	t:ok(string.format("milter peak memory grew by less than 8 MiB (%d -> %d kB)", before, after),
	     after - before < 8192)
end
t:expect("a body sealed as it arrived is a spool file named by the row, none in the row", "t|t",
	"SELECT spool_name = id, body IS NULL FROM message WHERE sender = '" .. sender .. "'")
local body = assert(io.open(bigfile, "rb"))
t:sealed_is("d.example decrypts it byte-exact, good signature", sender, rundir .. "/gd", fpr_a,
	"Subject: big\r\n\r\n" .. body:read("a"))
body:close()
os.remove(bigfile)
t:ok("d.example's key was fetched once, not again", t:key_gets("d") == 1,
	"GET /d/v1/key: " .. tostring(t:key_gets("d")))
t:finish{ diverted = 1 }
