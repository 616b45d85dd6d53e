-- t-cache.lua: the milter keeps each recipient domain's verdict in process
-- (milter/smf_cache.c) and forgets it at every change of peer, dns_cache
-- or recipient_key (sql/024 notifies stubmail_keys). A change made with
-- the triggers off (session_replication_role = replica: nobody is told) is
-- not seen, which shows the answer came from the cache; the same change
-- made normally is seen by the very next message.
dofile(testdir .. "/lib.lua")

local t = test("t-cache")
t:start()

local function wait_logged(ere)
	for _ = 1, 100 do
		if sh_args('grep -Eq "$2" "$1"', t.log, ere) then
			return true
		end
		os.execute("sleep 0.1")
	end
	return false
end

-- one message to bob@b.example; whether the milter diverted it (all its
-- recipients pulled: discarded from the push path at end of message) or
-- left it to be pushed (accepted at DATA: nothing to divert)
local function send(sender)
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "CACHE01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@b.example>"), "rcpt to bob@b.example", SMFIR_CONTINUE)
	if data(conn, nil) == SMFIR_ACCEPT then
		mt.disconnect(conn)
		return false
	end
	step(conn, mt.header(conn, "Subject", "cached"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Which way?\r\n"), "body", SMFIR_CONTINUE)
	local r = step(conn, mt.eom(conn), "eom", nil)
	mt.disconnect(conn)
	return r == SMFIR_DISCARD
end

t:ok("the cache listens for changes", wait_logged("info: answers cache on: .*LISTEN stubmail_keys"),
     select(2, sh("cat " .. q(t.log))))
local first = false
t:session("b.example pulls (peer row): diverted", function() first = send("c1@a.example") end)
t:ok("the first message was diverted", first)
-- bob's key lookup (WKD: none) was cached in recipient_key meanwhile,
-- whose notice names bob alone: b.example's verdict stays kept

local _, quiet = t:sql("SET session_replication_role = replica; "
                       .. "UPDATE peer SET pulling = false WHERE domain = 'b.example'")
t:ok("peer changed behind the milter's back (triggers off)", quiet)
local second = false
t:session("the next message", function() second = send("c2@a.example") end)
t:ok("decided from the cache: still diverted", second)

local _, told = t:sql("UPDATE peer SET pulling = false WHERE domain = 'b.example'")
t:ok("the same change, told (sql/024)", told)
os.execute("sleep 0.3")
local third = true
t:session("the next message", function() third = send("c3@a.example") end)
t:ok("the change is seen at once: pushed", not third)
t:expect("outbox rows for the diverted two only", "c1@a.example\nc2@a.example",
	"SELECT m.sender FROM outbox o JOIN message m ON m.id = o.message_id ORDER BY 1")
t:finish{ diverted = 2 }
