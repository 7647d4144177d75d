-- wrk script for `python -m loadtests.run --driver wrk` (wrk 4.x, LuaJIT).
--
-- Environment (read in every Lua state, since wrk passes script arguments to init() only):
--   LOADTEST_WRK_TOKEN     the JWT (HS256) sent as `Authorization: Bearer ...`
--   LOADTEST_WRK_SCENARIO  `jobs`: POST /jobs {"duration_ms": 0, "steps": 1}, a static request
--                          `users`: the users CRUD, create -> read -> update -> list -> delete
--   LOADTEST_WRK_RUN       a run id, to make the users' e-mail addresses unique
--   LOADTEST_WRK_OUT       where done() writes: <out>.json (wrk's figures) and <out>.csv (one
--                          row per response: seconds since the thread started, status, and the
--                          Server-Timing parts in ms, -1 where absent)
--
-- Per response the script only appends numbers to flat arrays (wrk cannot copy nested
-- tables between its Lua states); done() writes them out after the run, and Python does the
-- per-second aggregation. The system under test does no work for it: the Server-Timing
-- header is sent on every answer anyway.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } loadtest_timespec;
int clock_gettime(int clk, loadtest_timespec *tp);
]]
local clock_buffer = ffi.new("loadtest_timespec")
local function now()
  ffi.C.clock_gettime(0, clock_buffer) -- CLOCK_REALTIME: aligned with Python's time.time()
  return tonumber(clock_buffer.tv_sec) + tonumber(clock_buffer.tv_nsec) * 1e-9
end

local token = os.getenv("LOADTEST_WRK_TOKEN") or ""
local scenario = os.getenv("LOADTEST_WRK_SCENARIO") or "jobs"
local run_id = os.getenv("LOADTEST_WRK_RUN") or "run"
local auth = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }

if scenario == "users" then
  wrk.body = nil -- wrk.format() would send it with every GET and DELETE
else
  wrk.method = "POST"
  wrk.path = "/jobs"
  wrk.body = '{"duration_ms": 0, "steps": 1}'
  wrk.headers["Authorization"] = auth["Authorization"]
  wrk.headers["Content-Type"] = auth["Content-Type"]
end

-- main state: the threads, to read their arrays in done()
local threads = {}
function setup(thread)
  thread:set("thread_no", #threads + 1)
  threads[#threads + 1] = thread
end

-- thread state: what each response brought
function init(args)
  t0 = now()
  T, S, TOTAL, QUEUE, WORK, NOTICE = {}, {}, {}, {}, {}, {}
  n = 0
  pending, head, tail, created = {}, 1, 0, 0 -- a FIFO of follow-up requests
end

local function part(timing, name)
  local v = timing and string.match(timing, name .. ";dur=([%d.]+)")
  return v and tonumber(v) or -1
end

local function follow(step)
  tail = tail + 1
  pending[tail] = step
end

function response(status, headers, body)
  n = n + 1
  T[n] = now() - t0
  S[n] = status
  local timing = headers["Server-Timing"] or headers["server-timing"]
  TOTAL[n] = part(timing, "total")
  QUEUE[n] = part(timing, "queue")
  WORK[n] = part(timing, "work")
  NOTICE[n] = part(timing, "notice")
  if scenario ~= "users" or not body or string.find(body, '"items"', 1, true) then
    return
  end
  -- The users journey, driven by the bodies (wrk does not say which request a response
  -- answers): 201 -> read it; a read of the original -> rename it; the renamed one -> list
  -- a page and delete it.
  local id = string.match(body, '"id":%s*(%d+)')
  if status == 201 and id then
    follow(wrk.format("GET", "/users/" .. id, auth))
  elseif status == 200 and id and string.find(body, '"name":%s*"lt ') then
    follow(wrk.format("PUT", "/users/" .. id, auth, '{"name": "renamed"}'))
  elseif status == 200 and id and string.find(body, '"name":%s*"renamed"') then
    follow(wrk.format("GET", "/users?limit=10", auth))
    follow(wrk.format("DELETE", "/users/" .. id, auth))
  end
end

if scenario == "users" then
  function request()
    if head <= tail then
      local req = pending[head]
      pending[head] = nil
      head = head + 1
      return req
    end
    created = created + 1
    local who = run_id .. "-" .. thread_no .. "-" .. created
    return wrk.format("POST", "/users", auth,
      '{"name": "lt ' .. who .. '", "email": "' .. who .. '@example.com"}')
  end
end

function done(summary, latency, requests)
  local out = os.getenv("LOADTEST_WRK_OUT")
  if not out then
    return
  end
  local csv = io.open(out .. ".csv", "w")
  csv:write("thread,t0,t,status,total,queue,work,notice\n")
  for no, thread in ipairs(threads) do
    local t0_, t, s = thread:get("t0"), thread:get("T"), thread:get("S")
    local total, queue, work, notice =
      thread:get("TOTAL"), thread:get("QUEUE"), thread:get("WORK"), thread:get("NOTICE")
    for i = 1, #t do
      csv:write(string.format("%d,%.6f,%.6f,%d,%.3f,%.3f,%.3f,%.3f\n", no, t0_, t[i], s[i],
        total[i], queue[i], work[i], notice[i]))
    end
  end
  csv:close()
  local e = summary.errors
  local json = io.open(out .. ".json", "w")
  json:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p95": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max))
  json:close()
end
