-- POST /api/v1/auth/refresh as a chain: every response carries the next
-- refresh token of its session, which the next request presents. Seeded from
-- a file of refresh tokens (one per line, one per connection plus one: wrk
-- calls request() once before the run to check the script), split between
-- wrk threads. A token is never presented twice, so every request is
-- a real rotation (consume + insert + user read in one transaction + signing).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local queue = {}
local nthreads = 1

function init(args)
   local file = os.getenv("BENCH_REFRESH_TOKENS")
   nthreads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
   local i = 0
   for line in io.lines(file) do
      if line ~= "" and i % nthreads == tid then
         queue[#queue + 1] = line
      end
      i = i + 1
   end
end

function request()
   local token = table.remove(queue)
   if token == nil then
      -- Ran dry (an error response carried no next token): this request
      -- fails with 401 and shows in non2xx.
      token = "00000000-0000-4000-8000-000000000000"
   end
   return wrk.format("POST", "/api/v1/auth/refresh",
      { ["Content-Type"] = "application/json" },
      '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
   local token = body and body:match('"refresh_token"%s*:%s*"([^"]+)"')
   if token then
      queue[#queue + 1] = token
   end
end

-- The statuses seen, printed before the report (a broken chain shows here).
statuses = {}
local report = done
local response_chain = response
function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   response_chain(status, headers, body)
end

function done(summary, latency, requests)
   for _, thread in ipairs(threads) do
      local s = thread:get("statuses")
      for k, v in pairs(s or {}) do
         io.write(string.format("status %s: %d\n", k, v))
      end
   end
   report(summary, latency, requests)
end
