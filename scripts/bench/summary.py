#!/usr/bin/env python3
"""Summary of a scripts/bench.sh run: medians over the rounds of every
measurement in OUT/results.jsonl, the ratios and the targets of issue 7.

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
    "haproxy": "c. HAProxy 2.6, ES256 jwt_verify + role claim",
    "authgw": "d. authgw, ES256 + role-rules plugin + revocation",
    "nginx-authz": "e. nginx auth_request → authgw (the decision of d)",
}
w("| system | req/s | p50 | p99 | errors / non-2xx | runs (req/s) |")
w("| --- | ---: | ---: | ---: | ---: | --- |")
proxy = {}
for sys_ in names:
    rs = pick(test="proxy", system=sys_)
    proxy[sys_] = (med(rs, "rps"), med(rs, "p50_us"), med(rs, "p99_us"))
    w(f"| {names[sys_]} | {num(proxy[sys_][0])} | {ms(proxy[sys_][1])} | {ms(proxy[sys_][2])} "
      f"| {errs(rs)} | {', '.join(num(r['rps']) for r in rs)} |")
w("")
a = proxy["authgw"][0]
r_ngx, r_hap, r_dir = ratio(a, proxy["nginx"][0]), ratio(a, proxy["haproxy"][0]), ratio(a, proxy["direct"][0])
w(f"Ratios (req/s): authgw/nginx **{num(r_ngx, '{:.2f}')}×**, authgw/haproxy **{num(r_hap, '{:.2f}')}×**, "
  f"authgw/direct **{num(r_dir, '{:.2f}')}×**.")
w("")
e = proxy["nginx-authz"][0]
w(f"Forward-auth: nginx auth_request → authgw **{num(e)} decisions/s**; "
  f"e/nginx plain **{num(ratio(e, proxy['nginx'][0]), '{:.2f}')}×**, "
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
w("| target | measured | verdict |")
w("| --- | ---: | --- |")
w(f"| authgw ≥ 1.0× nginx plain-proxy req/s | {num(r_ngx, '{:.2f}')}× | {verdict(None if r_ngx is None else r_ngx >= 1.0)} |")
w(f"| authgw ≥ 3× HAProxy-JWT req/s | {num(r_hap, '{:.2f}')}× | {verdict(None if r_hap is None else r_hap >= 3.0)} |")
w(f"| proxy p99 during a login flood ≤ 2× baseline | {num(flood_ratio, '{:.2f}')}× ({ms(f99)} vs {ms(b99)}) "
  f"| {verdict(None if flood_ratio is None else flood_ratio <= 2.0)} |")
w(f"| RSS ≤ 64 MiB at 10k idle connections | {num(rss_mib, '{:.1f}')} MiB | "
  f"{verdict(None if rss_mib is None else rss_mib <= 64 and rss[-1]['open'] >= 10000)} |")

text = "\n".join(md) + "\n"
(out / "summary.md").write_text(text)
print(text)
