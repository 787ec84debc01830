-- wrk script: POST each pre-signed Stripe event of a file exactly once, then stop.
--
--   wrk -t 1 -c C -d MAX -s bench/wrk/e2e_events.lua URL -- RECORDS PATH DELAY_MS FILLER
--
-- RECORDS holds one request a line: "<Stripe-Signature value>\t<JSON body>" (the format
-- of signed_events.lua), all built before the clock starts. DELAY_MS 0 is a closed loop
-- (each connection sends its next request as soon as the answer is in); above 0 each
-- connection waits that long before each request, an offered rate of about
-- C * 1000 / DELAY_MS requests a second.
--
-- The end of the file: gunicorn's sync workers close every connection and wrk connects
-- again at once, so a connection left with nothing to send would sit accepted by a worker,
-- which waits for a request until gunicorn's 30 s timeout kills it. A connection with no
-- event left GETs FILLER instead (a small static file WhiteNoise serves from memory; no
-- database, no broker) every 20 ms until the last event is answered; then the script
-- prints "WRK_THREAD_DONE" and stops, and bench/e2e.py ends wrk with SIGINT (wrk only
-- ends by itself at MAX). One thread only: a stopped thread's sockets stay open until wrk
-- exits. done() prints one line "WRK_RESULT {json}".

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local records, path = args[1], args[2]
   pause, filler = tonumber(args[3]), wrk.format("GET", args[4])
   requests, issued, answered, fillers, failed = {}, 0, 0, 0, 0
   for line in io.lines(records) do
      local signature, body = line:match("^([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path, {
         ["Content-Type"] = "application/json",
         ["Stripe-Signature"] = signature,
      }, body)
   end
   available = #requests
end

function delay()
   return issued < available and pause or 20
end

-- wrk calls request() once before the run to check what it returns (script_verify_request,
-- on the first thread's state): that call must not use up an event.
function request()
   if not verified then
      verified = true
      return filler
   end
   if issued < available then
      issued = issued + 1
      return requests[issued]
   end
   fillers = fillers + 1
   return filler
end

function response(status, headers, body)
   if body ~= nil and body:sub(1, 4) == "<svg" then
      return
   end
   answered = answered + 1
   if status ~= 200 then
      failed = failed + 1
   end
   if answered == available then
      io.write("WRK_THREAD_DONE\n")
      io.flush()
      wrk.thread:stop()
   end
end

-- done() runs in wrk's main Lua state: the thread's counters are read through it.
function done(summary, latency, _)
   local t, e = threads[1], summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"issued":%d,"answered":%d,"fillers":%d,'
         .. '"failed":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,'
         .. '"timeout":%d},"p50_us":%d,"p99_us":%d}\n',
      summary.requests, summary.duration, t:get("issued"), t:get("answered"),
      t:get("fillers"), t:get("failed"),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
