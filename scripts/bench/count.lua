-- GET with the headers given by -H, and stop once BENCH_MAX_REQUESTS
-- responses have come back (the syscall count of scripts/bench.sh, run with
-- -t1): the thread stops at once and the file BENCH_DONE_FILE tells
-- bench.sh to interrupt wrk, which then reports as usual (report.lua).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local max = tonumber(os.getenv("BENCH_MAX_REQUESTS"))
local done_file = os.getenv("BENCH_DONE_FILE")
local seen = 0
function response(status, headers, body)
   seen = seen + 1
   if seen == max then
      local f = io.open(done_file, "w")
      if f then
         f:write(seen, "\n")
         f:close()
      end
      wrk.thread:stop()
   end
end
