-- wrk script: POST pre-signed Stripe events, a different event on every request.
--
--   wrk -t T -c C -d D -s bench/wrk/signed_events.lua URL -- RECORDS PATH T
--
-- RECORDS holds one request a line: "<Stripe-Signature value>\t<JSON body>". Thread k
-- of T takes lines k, k+T, k+2T ... and builds every request before the clock starts,
-- so the client does no formatting while it measures. A thread that runs out of lines
-- starts over (duplicates, which the bench reports as an overrun and rejects).
-- done() prints one line "WRK_RESULT {json}" for bench/ingest.py to read.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   local records, path, nthreads = args[1], args[2], tonumber(args[3])
   requests, issued, n = {}, 0, 0
   for line in io.lines(records) do
      if n % nthreads == tid then
         local signature, body = line:match("^([^\t]*)\t(.*)$")
         requests[#requests + 1] = wrk.format("POST", path, {
            ["Content-Type"] = "application/json",
            ["Stripe-Signature"] = signature,
         }, body)
      end
      n = n + 1
   end
   available = #requests
end

function request()
   issued = issued + 1
   return requests[(issued - 1) % #requests + 1]
end

-- The percentiles bench/common.py GRID lists, in the same order.
local function grid()
   local g = {}
   for p = 1, 195 do g[#g + 1] = p / 2 end
   for p = 1, 19 do g[#g + 1] = 98 + p / 10 end
   g[#g + 1] = 99.95
   g[#g + 1] = 100.0
   return g
end

function done(summary, latency, _)
   local issued_total, overrun = 0, 0
   for _, thread in ipairs(threads) do
      local sent, available = thread:get("issued"), thread:get("available")
      issued_total = issued_total + sent
      if sent > available then overrun = overrun + sent - available end
   end
   local values = {}
   for _, p in ipairs(grid()) do
      values[#values + 1] = string.format("%.1f", p == 100.0 and latency.max or latency:percentile(p))
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"issued":%d,"overrun":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":[%s]}\n',
      summary.requests, summary.duration, issued_total, overrun,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(values, ",")))
end
