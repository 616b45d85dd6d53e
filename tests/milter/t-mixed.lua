-- t-mixed.lua: outbound mail (submission listener, {daemon_name}
-- ORIGINATING) to one pulling and one push recipient. The pulling one is
-- removed from the envelope exactly as received, the message continues for
-- the other; headers reach the spool byte-exact (b.example decrypts the
-- stored body and compares). The milter starts over a stale socket file.
dofile(testdir .. "/lib.lua")

local t = test("t-mixed")
local sender = "alice@a.example"

-- a stale socket (left by a killed milter) must not stop it: smfi_opensocket(1)
os.execute("python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "
           .. q(t.sock_path))
t:start("over a stale socket file")

t:session("pulling recipient removed, message continues", function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.test_action(conn, SMFIF_DELRCPT), "SMFIF_DELRCPT not negotiated")
	check(mt.test_option(conn, SMFIP_HDR_LEADSPC), "SMFIP_HDR_LEADSPC not negotiated")
	check(not mt.test_option(conn, SMFIP_NODATA), "xxfi_data negotiated away")

	check(mt.macro(conn, SMFIC_MAIL, "i", "MIXED01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<Bob@B.Example>"), "rcpt to bob", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<carol@c.example>"), "rcpt to carol", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "From", "Alice <" .. sender .. ">"), "header From", SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", " two  spaces"), "header Subject", SMFIR_CONTINUE)
	step(conn, mt.header(conn, "X-Folded", "first\n\tsecond"), "header X-Folded", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Hello Bob.\r\n"), "body 1", SMFIR_CONTINUE)
	step(conn, mt.bodystring(conn, "Second chunk.\r\n"), "body 2", SMFIR_CONTINUE)
	local r = step(conn, mt.eom(conn), "eom", nil)
	check(r == SMFIR_CONTINUE or r == SMFIR_ACCEPT,
	      "eom: expected continue or accept, got " .. string.format("%c", r))
	check(mt.eom_check(conn, MT_RCPTDELETE, "<Bob@B.Example>"),
	      "pulling recipient <Bob@B.Example> was not removed")
	check(not mt.eom_check(conn, MT_RCPTDELETE, "<carol@c.example>"),
	      "push recipient <carol@c.example> was removed")
	mt.disconnect(conn)
end)

t:expect("one message row", "1",
	"SELECT count(*) FROM message WHERE sender = 'alice@a.example'")
t:expect("outbox row for the pulling recipient only, normalised", "bob@b.example|b.example",
	[[SELECT o.recipient, o.recipient_domain FROM outbox o JOIN message m ON m.id = o.message_id
	  WHERE m.sender = 'alice@a.example' ORDER BY 1]])
t:expect("address book learned both recipients",
	"bob@b.example|b.example|learned\ncarol@c.example|c.example|learned",
	[[SELECT contact, contact_domain, source FROM address_book
	  WHERE owner = 'alice@a.example' ORDER BY 1]])
t:expect("message id is 128 random bits, the small body in its row", "t",
	"SELECT id ~ '^[0-9a-f]{32}$' AND spool_name IS NULL AND octet_length(body) = size"
	.. " FROM message WHERE sender = 'alice@a.example'")
t:expect("format openpgp", "openpgp",
	"SELECT format FROM message WHERE sender = 'alice@a.example'")
t:sealed_is("b.example decrypts it byte-exact (leading space, CRLF folding), size matches",
	sender, rundir .. "/gb", fpr_a,
	"From: Alice <alice@a.example>\r\nSubject:  two  spaces\r\nX-Folded: first\r\n\tsecond\r\n"
	.. "\r\nHello Bob.\r\nSecond chunk.\r\n")
t:logged("diverted line names queue id, id, sender, recipients, size and format",
	"MIXED01: diverted id=[0-9a-f]{32} from=<alice@a.example> to=bob@b.example "
	.. "\\(1 of 2 recipients\\) size=[0-9]+ format=openpgp")
t:finish{ diverted = 1 }
