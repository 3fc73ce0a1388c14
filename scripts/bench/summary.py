#!/usr/bin/env python3
"""Summary of a scripts/bench.sh run: medians over the rounds of every
measurement in OUT/results.jsonl, the ratios and the targets of issues 7
and 18 (CPU time per request, syscalls per request).

    summary.py OUT      prints the summary and writes OUT/summary.md
"""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
meta = json.loads((out / "meta.json").read_text())
rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]


def pick(**kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f} ms"


def num(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


def ratio(a, b):
    return None if a is None or not b else a / b


def cpu_us(r, key=None):
    """CPU µs per request of one proxy run: user + system, or one of them."""
    if r.get("sut_user_s") is None or not r.get("requests"):
        return None
    s = r[key] if key else r["sut_user_s"] + r["sut_sys_s"]
    return s * 1e6 / r["requests"]


def med_of(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def errs(rs):
    n = sum(r.get("non2xx", 0) + r.get("connect_errors", 0) + r.get("read_errors", 0)
            + r.get("write_errors", 0) + r.get("timeouts", 0) for r in rs)
    return n


md = []
w = md.append
w(f"Run {meta['started']} on {meta['machine']}; load average {meta['load_before']} before, "
  f"{meta.get('load_after', '?')} after.")
w("")
w(f"wrk: {meta['wrk_args']}; {meta['rounds']} rounds, systems alternated in each round; "
  f"medians over the rounds. System under test on CPU {meta['sut_cpus']}, wrk and the "
  f"upstream on CPU {meta['load_cpus']}.")
w("")

# --- proxy ---------------------------------------------------------------
names = {
    "direct": "a. upstream nginx, direct (the limit)",
    "nginx": "b. nginx reverse proxy, no auth",
    "bare-hyper": "f. bare hyper 1 proxy (gateway/examples/bare_proxy.rs), no auth",
    "haproxy": "c. HAProxy 2.6, ES256 jwt_verify + role claim",
    "authgw-base": "d0. authgw, the previous binary (BENCH_BASE_BIN): the A/B's A",
    "authgw": "d. authgw, ES256 + role-rules plugin + revocation",
    "nginx-authz": "e. nginx auth_request → authgw (the decision of d)",
}
# Syscalls per request: the strace run of each system (one per run of bench.sh).
sysc = {}
for r in pick(test="syscalls"):
    if r.get("requests"):
        sysc[r["system"]] = r
def per_req(sys_, name=None):
    r = sysc.get(sys_)
    if r is None:
        return None
    n = r["total"] if name is None else r["calls"].get(name, 0)
    return n / r["requests"]

w("| system | req/s | p50 | p99 | CPU µs/request (user + sys) | of which user | SUT CPU use "
  "| syscalls/request | errors / non-2xx | runs (req/s) |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
proxy, cpu, cpu_user = {}, {}, {}
for sys_ in names:
    rs = pick(test="proxy", system=sys_)
    if not rs:
        continue
    proxy[sys_] = (med(rs, "rps"), med(rs, "p50_us"), med(rs, "p99_us"))
    cpu[sys_] = med_of(cpu_us(r) for r in rs)
    cpu_user[sys_] = med_of(cpu_us(r, "sut_user_s") for r in rs)
    use = med_of((r["sut_user_s"] + r["sut_sys_s"]) / r["wall_s"] if r.get("wall_s") else None for r in rs)
    w(f"| {names[sys_]} | {num(proxy[sys_][0])} | {ms(proxy[sys_][1])} | {ms(proxy[sys_][2])} "
      f"| {num(cpu[sys_], '{:.1f}')} | {num(cpu_user[sys_], '{:.1f}')} | {num(use and use * 100, '{:.0f} %')} "
      f"| {num(per_req(sys_), '{:.2f}')} | {errs(rs)} | {', '.join(num(r['rps']) for r in rs)} |")
w("")
w("CPU: user + system time of the system's processes (/proc/PID/stat; nginx: master + worker; "
  "e: nginx and authgw; a: the upstream, which shares the load CPU) over each throughput run ÷ the "
  "requests wrk completed, median of the rounds; SUT CPU use: that time ÷ the run's wall time "
  "(100 % = the whole of one core).")
w("")


def rps(sys_):
    return proxy.get(sys_, (None,))[0]


a = rps("authgw")
r_ngx, r_hap, r_dir = ratio(a, rps("nginx")), ratio(a, rps("haproxy")), ratio(a, rps("direct"))
r_bare = ratio(a, rps("bare-hyper"))
w(f"Ratios (req/s): authgw/nginx **{num(r_ngx, '{:.2f}')}×**, authgw/haproxy **{num(r_hap, '{:.2f}')}×**, "
  f"authgw/direct **{num(r_dir, '{:.2f}')}×**, authgw/bare-hyper **{num(r_bare, '{:.2f}')}×** "
  f"(bare-hyper/nginx {num(ratio(rps('bare-hyper'), rps('nginx')), '{:.2f}')}×).")
w("")
w(f"Ratios (CPU per request): authgw/nginx **{num(ratio(cpu.get('authgw'), cpu.get('nginx')), '{:.2f}')}×**, "
  f"authgw/bare-hyper **{num(ratio(cpu.get('authgw'), cpu.get('bare-hyper')), '{:.2f}')}×**, "
  f"bare-hyper/nginx {num(ratio(cpu.get('bare-hyper'), cpu.get('nginx')), '{:.2f}')}×; "
  f"(syscalls per request): authgw/nginx **{num(ratio(per_req('authgw'), per_req('nginx')), '{:.2f}')}×**, "
  f"authgw/bare-hyper **{num(ratio(per_req('authgw'), per_req('bare-hyper')), '{:.2f}')}×**, "
  f"bare-hyper/nginx {num(ratio(per_req('bare-hyper'), per_req('nginx')), '{:.2f}')}×.")
w("")

if "authgw-base" in proxy:
    w(f"A/B (d against d0, the previous binary, same rounds): req/s "
      f"**{num(ratio(a, rps('authgw-base')), '{:.3f}')}×**, CPU per request "
      f"**{num(ratio(cpu.get('authgw'), cpu.get('authgw-base')), '{:.3f}')}×** (user "
      f"{num(ratio(cpu_user.get('authgw'), cpu_user.get('authgw-base')), '{:.3f}')}×), syscalls per request "
      f"{num(ratio(per_req('authgw'), per_req('authgw-base')), '{:.3f}')}×.")
    # Paired by round (d and d0 run back to back in each): the median of the
    # per-round ratios, less moved by a round the host slowed as a whole.
    pairs = {}
    for r in pick(test="proxy", system="authgw-base"):
        d = pick(test="proxy", system="authgw", round=r["round"])
        if d and r.get("rps"):
            pairs[r["round"]] = (d[0], r)
    if pairs:
        rps_r = [d["rps"] / b["rps"] for d, b in pairs.values()]
        cpu_r = [cpu_us(d) / cpu_us(b) for d, b in pairs.values() if cpu_us(d) and cpu_us(b)]
        w(f"Paired by round (median of {len(pairs)} per-round ratios d/d0): req/s "
          f"**{statistics.median(rps_r):.3f}×** (rounds: {', '.join(f'{x:.2f}' for x in rps_r)}), "
          f"CPU per request **{num(statistics.median(cpu_r) if cpu_r else None, '{:.3f}')}×** "
          f"(rounds: {', '.join(f'{x:.2f}' for x in cpu_r)}).")
    w("")

# --- syscalls per request ------------------------------------------------
if sysc:
    cols = [s_ for s_ in ("nginx", "bare-hyper", "haproxy", "authgw-base", "authgw") if s_ in sysc]
    sc = meta.get("syscalls") or {}
    w(f"Syscalls per proxied request: `strace -c -f` attached to every process and thread of the system, "
      f"during a wrk run of its own (-t1 -c{sc.get('conns', '?')}, stopped after {sc.get('requests', '?')} "
      f"responses; strace slows the system, so not a throughput run): calls ÷ requests completed. "
      f"Syscalls with at least 0.01 per request in one system; the rest in \"other\".")
    w("")
    w("| syscall | " + " | ".join(cols) + " |")
    w("| --- |" + " ---: |" * len(cols))
    every = sorted({k for s_ in cols for k in sysc[s_]["calls"]},
                   key=lambda k: -max(per_req(s_, k) for s_ in cols))
    shown = [k for k in every if max(per_req(s_, k) for s_ in cols) >= 0.01]
    for k in shown:
        w(f"| {k} | " + " | ".join(num(per_req(s_, k), '{:.2f}') for s_ in cols) + " |")
    w("| other | " + " | ".join(num(sum(per_req(s_, k) for k in every if k not in shown), '{:.3f}')
                              for s_ in cols) + " |")
    w("| **total** | " + " | ".join(f"**{per_req(s_):.2f}**" for s_ in cols) + " |")
    w("| requests counted (req/s under strace) | "
      + " | ".join(f"{sysc[s_]['requests']:,} ({sysc[s_]['rps']:,.0f})" for s_ in cols) + " |")
    w("| failed calls (EAGAIN...) per request | "
      + " | ".join(num(sysc[s_]["errors"] / sysc[s_]["requests"], '{:.2f}') for s_ in cols) + " |")
    w("")
    # clock_nanosleep is paced by time, not by requests (authgw: the plugin
    # epoch ticker, one a millisecond while plugin calls run): under strace,
    # with fewer requests per second, it weighs more per request.
    for s_ in cols:
        r = sysc[s_]
        cns = r["calls"].get("clock_nanosleep", 0)
        if cns < r["requests"] * 0.01 or not r.get("rps") or not rps(s_):
            continue
        per_s = cns / (r["requests"] / r["rps"])
        at_speed = per_s / rps(s_)
        w(f"{s_}'s clock_nanosleep is paced by time, not by requests: {per_s:,.0f} per second under strace "
          f"({per_req(s_, 'clock_nanosleep'):.2f} per request at {r['rps']:,.0f} req/s); at the throughput runs' "
          f"{rps(s_):,.0f} req/s that is about {at_speed:.2f} per request, and the total about "
          f"{per_req(s_) - per_req(s_, 'clock_nanosleep') + at_speed:.2f} syscalls per request (an estimate).")
        w("")
e = rps("nginx-authz")
w(f"Forward-auth: nginx auth_request → authgw **{num(e)} decisions/s**; "
  f"e/nginx plain **{num(ratio(e, rps('nginx')), '{:.2f}')}×**, "
  f"e/authgw's own proxy **{num(ratio(e, a), '{:.2f}')}×**.")
w("")

# --- auth API ------------------------------------------------------------
w("| auth API | figure | against | ratio |")
w("| --- | ---: | ---: | ---: |")
rs = pick(test="check")
check = med(rs, "rps")
w(f"| `GET /api/v1/auth/check` req/s (p50 {ms(med(rs, 'p50_us'))}, p99 {ms(med(rs, 'p99_us'))}) "
  f"| {num(check)} | authgw proxy {num(a)} | {num(ratio(check, a), '{:.2f}')} |")
rs = pick(test="login")
login = med(rs, "rps")
cores = meta["sut_cores"]
argon = meta.get("argon2_verify_ms")
theory = cores / (argon / 1000) if argon else None
w(f"| login/s, {meta['login_conns']} connections (p50 {ms(med(rs, 'p50_us'))}, errors {errs(rs)}) "
  f"| {num(login, '{:,.1f}')} | {cores} core(s) ÷ {num(argon, '{:.1f}')} ms argon2id verify "
  f"= {num(theory, '{:,.1f}')} | {num(ratio(login, theory), '{:.2f}')} |")
rs1 = pick(test="login1")
if rs1:
    w(f"| one login alone (1 connection), p50 latency | {ms(med(rs1, 'p50_us'))} | argon2id verify "
      f"{num(argon, '{:.1f}')} ms | |")
rs = pick(test="refresh", tool="authgw")
rp = pick(test="refresh", tool="pgbench")
refresh, pg = med(rs, "rps"), med(rp, "rps")
w(f"| refresh/s, {meta['refresh_conns']} connections, pool {meta['pool_size']} (p50 {ms(med(rs, 'p50_us'))}, "
  f"errors {errs(rs)}) | {num(refresh)} | pgbench, same transaction, {meta['pool_size']} clients: "
  f"{num(pg)} tps | {num(ratio(refresh, pg), '{:.2f}')} |")
w("")

# --- flood ---------------------------------------------------------------
base = pick(test="flood", phase="baseline")
fl = pick(test="flood", phase="flood")
fl_login = pick(test="flood_login")
b99, f99 = med(base, "p99_us"), med(fl, "p99_us")
w("| authgw proxy under a login flood | req/s | p50 | p99 | login/s meanwhile |")
w("| --- | ---: | ---: | ---: | ---: |")
w(f"| baseline | {num(med(base, 'rps'))} | {ms(med(base, 'p50_us'))} | {ms(b99)} | - |")
w(f"| during a flood of {meta['flood_conns']} login connections | {num(med(fl, 'rps'))} | "
  f"{ms(med(fl, 'p50_us'))} | {ms(f99)} | {num(med(fl_login, 'rps'), '{:,.1f}')} |")
w("")

# --- RSS -----------------------------------------------------------------
rss = pick(test="rss")
if rss:
    r = rss[-1]
    per = (r["rss_kib_conns"] - r["rss_kib_warm"]) * 1024 / max(r["open"], 1)
    w(f"authgw RSS: {r['rss_kib_start'] / 1024:.1f} MiB at start, {r['rss_kib_warm'] / 1024:.1f} MiB after a "
      f"warm-up, **{r['rss_kib_conns'] / 1024:.1f} MiB with {r['open']} idle keep-alive connections** "
      f"({r['served']} served one request each; {per:,.0f} bytes per connection; "
      f"{r['fds']} open fds; {r.get('open_later', '?')} still open {r.get('later_s', '?')} s later).")
    w("")

# --- targets -------------------------------------------------------------
def verdict(ok):
    return "-" if ok is None else ("met" if ok else "**missed**")

rss_mib = rss[-1]["rss_kib_conns"] / 1024 if rss else None
flood_ratio = ratio(f99, b99)
w("| target (issue 7) | measured | verdict |")
w("| --- | ---: | --- |")
w(f"| authgw ≥ 1.0× nginx plain-proxy req/s | {num(r_ngx, '{:.2f}')}× | {verdict(None if r_ngx is None else r_ngx >= 1.0)} |")
w(f"| authgw ≥ 3× HAProxy-JWT req/s | {num(r_hap, '{:.2f}')}× | {verdict(None if r_hap is None else r_hap >= 3.0)} |")
w(f"| proxy p99 during a login flood ≤ 2× baseline | {num(flood_ratio, '{:.2f}')}× ({ms(f99)} vs {ms(b99)}) "
  f"| {verdict(None if flood_ratio is None else flood_ratio <= 2.0)} |")
w(f"| RSS ≤ 64 MiB at 10k idle connections | {num(rss_mib, '{:.1f}')} MiB | "
  f"{verdict(None if rss_mib is None else rss_mib <= 64 and rss[-1]['open'] >= 10000)} |")
w("")

# --- issue 18's targets ----------------------------------------------------
def at_most(x, bound):
    return None if x is None or bound is None else x <= bound


def at_least(x, bound):
    return None if x is None or bound is None else x >= bound


ac, nc = cpu.get("authgw"), cpu.get("nginx")
asc, nsc = per_req("authgw"), per_req("nginx")
w("| target (issue 18) | measured | verdict |")
w("| --- | ---: | --- |")
w(f"| authgw ≥ 0.9× nginx plain-proxy req/s | {num(r_ngx, '{:.2f}')}× | {verdict(at_least(r_ngx, 0.9))} |")
w(f"| authgw ≥ 4× HAProxy-JWT req/s | {num(r_hap, '{:.2f}')}× | {verdict(at_least(r_hap, 4.0))} |")
idle_bound = ratio(login, theory)
w(f"| proxy p99 during a login flood ≤ 1.5× baseline, and login/s with the proxy idle ≥ 0.8× the "
  f"one-core bound | {num(flood_ratio, '{:.2f}')}×; login/s {num(idle_bound, '{:.2f}')}× the bound "
  f"(during the flood {num(med(fl_login, 'rps'), '{:,.1f}')}) "
  f"| {verdict(None if flood_ratio is None or idle_bound is None else flood_ratio <= 1.5 and idle_bound >= 0.8)} |")
w(f"| syscalls per proxied request ≤ nginx's | {num(asc, '{:.2f}')} (nginx {num(nsc, '{:.2f}')}) "
  f"| {verdict(at_most(asc, nsc))} |")
w(f"| CPU per request ≤ 15 µs | {num(ac, '{:.1f}')} µs user + sys ({num(cpu_user.get('authgw'), '{:.1f}')} user; "
  f"nginx {num(nc, '{:.1f}')}) | {verdict(at_most(ac, 15.0))} |")
w(f"| RSS ≤ 64 MiB at 10k idle connections | {num(rss_mib, '{:.1f}')} MiB | "
  f"{verdict(None if rss_mib is None else rss_mib <= 64 and rss[-1]['open'] >= 10000)} |")

text = "\n".join(md) + "\n"
(out / "summary.md").write_text(text)
print(text)
