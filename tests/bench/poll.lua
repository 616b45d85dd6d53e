-- wrk script for tests/bench/run: one request over and over, described by
-- the environment (so that a token never lands in a file or argv):
--   BENCH_METHOD  GET (default) or POST
--   BENCH_TOKEN   bearer token (none: no Authorization header)
--   BENCH_INM     If-None-Match value (none: unconditional)
--   BENCH_BODY    request body, sent as application/json
-- At the end it prints "status CODE COUNT" for every status seen, summed
-- over wrk's threads, so the harness can prove that every answer was the
-- one it meant to measure (a run full of 429s or 401s is fast and worthless).

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end
local inm = os.getenv("BENCH_INM")
if inm and inm ~= "" then
   wrk.headers["If-None-Match"] = inm
end
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   counts = {}
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(threads) do
      for code, n in pairs(t:get("counts")) do
         total[code] = (total[code] or 0) + n
      end
   end
   for code, n in pairs(total) do
      io.write(string.format("status %d %d\n", code, n))
   end
end
