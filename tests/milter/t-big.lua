-- t-big.lua: a large message (the file bigfile, streamed in 65535-octet chunks, the most one milter body step carries)
-- to a pulling domain with sealing on: the runner checks the milter's
-- memory stayed flat and the stored body decrypts to exactly what was sent.
dofile(testdir .. "/lib.lua")

run(function()
	local conn = open("192.0.2.10", "ORIGINATING")
	check(mt.macro(conn, SMFIC_MAIL, "i", "BIG01") == nil, "mt.macro(i)")
	step(conn, mt.mailfrom(conn, "<" .. sender .. ">"), "mail from", SMFIR_CONTINUE)
	step(conn, mt.rcptto(conn, "<bob@d.example>"), "rcpt to bob@d.example", SMFIR_CONTINUE)
	data(conn, SMFIR_CONTINUE)
	step(conn, mt.header(conn, "Subject", "big"), "header", SMFIR_CONTINUE)
	step(conn, mt.eoh(conn), "eoh", SMFIR_CONTINUE)
	local f = io.open(bigfile, "rb")
	check(f ~= nil, "cannot open " .. tostring(bigfile))
	while true do
		local chunk = f:read(65535)
		if chunk == nil then
			break
		end
		step(conn, mt.bodystring(conn, chunk), "body", SMFIR_CONTINUE)
	end
	f:close()
	step(conn, mt.eom(conn), "eom", SMFIR_DISCARD)
	mt.disconnect(conn)
end)
