-- Included by every wrk script of scripts/bench.sh: at the end of a run,
-- one machine-readable line with the figures bench.sh keeps.
--   BENCH_JSON {"requests":..,"rps":..,"p50_us":..,"p99_us":..,"non2xx":..,...}
-- Latencies are wrk's (closed loop: each connection waits for its response).
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
         .. '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
      summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
