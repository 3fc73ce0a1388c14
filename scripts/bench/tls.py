#!/usr/bin/env python3
"""The TLS part of scripts/bench.sh (issue 22): parsers of the h2load and
`openssl s_time` outputs, and the TLS summary.

    tls.py h2load RAW                 one JSON line from an h2load output
    tls.py stime WALL_S RAW...        one JSON line from parallel s_time runs
    tls.py summary OUT [--append]     prints the TLS summary; writes (or appends
                                      to) OUT/summary.md
"""
import json
import re
import statistics
import sys
from pathlib import Path

UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def die(msg):
    print(f"tls.py: {msg}", file=sys.stderr)
    sys.exit(1)


def h2load(raw):
    text = Path(raw).read_text(errors="replace")
    m = re.search(r"^finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s", text, re.M)
    if not m:
        die(f"no 'finished in' line in {raw} (h2load failed?)")
    out = {"duration_us": float(m.group(1)) * UNITS_US[m.group(2)], "rps": float(m.group(3))}
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if not m:
        die(f"no 'requests:' line in {raw}")
    total, _, done, ok, failed, errored, timeout = map(int, m.groups())
    out.update(requests=done, succeeded=ok, failed=failed, errored=errored, timeouts=timeout)
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    out["non2xx"] = sum(map(int, m.groups()[1:])) if m else None
    m = re.search(r"^time for request:\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)", text, re.M)
    if m:
        out["mean_us"] = float(m.group(5)) * UNITS_US[m.group(6)]
    for key, label in (("tls_protocol", "TLS Protocol"), ("cipher", "Cipher"),
                       ("server_temp_key", "Server Temp Key"), ("alpn", "Application protocol")):
        m = re.search(rf"^{label}: (.*)$", text, re.M)
        out[key] = m.group(1).strip() if m else None
    return out


def stime(wall_s, raws):
    conns = 0
    per_conn_bytes = []
    for raw in raws:
        text = Path(raw).read_text(errors="replace")
        m = re.search(r"^(\d+) connections in \d+ real seconds, (\d+) bytes read per connection", text, re.M)
        if not m:
            die(f"no 'connections in ... real seconds' line in {raw} (s_time failed?)")
        conns += int(m.group(1))
        per_conn_bytes.append(int(m.group(2)))
    return {"requests": conns, "duration_us": wall_s * 1e6, "rps": conns / wall_s if wall_s else None,
            "clients": len(raws), "bytes_per_conn_min": min(per_conn_bytes)}


# --- summary -----------------------------------------------------------------
def summary(out, append):
    meta = json.loads((out / "meta.json").read_text())
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]
    tls = meta.get("tls") or {}

    def pick(**kw):
        return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]

    def med(rs, key):
        vals = [r[key] for r in rs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def num(x, fmt="{:,.0f}"):
        return "-" if x is None else fmt.format(x)

    def ratio(a, b):
        return None if a is None or not b else a / b

    def errs(rs):
        return sum((r.get("non2xx") or 0) + r.get("connect_errors", 0) + r.get("read_errors", 0)
                   + r.get("write_errors", 0) + r.get("timeouts", 0) + r.get("failed", 0)
                   + r.get("errored", 0) for r in rs)

    def cpu(rs):
        """Median SUT CPU share (%) and SUT CPU µs per request over the runs."""
        share = [100 * r["sut_cpu_s"] / r["wall_s"] for r in rs if r.get("wall_s")]
        per = [1e6 * r["sut_cpu_s"] / r["requests"] for r in rs if r.get("requests")]
        return (statistics.median(share) if share else None, statistics.median(per) if per else None)

    names = {
        "nginx": "nginx reverse proxy, plain HTTP (b.)",
        "authgw": "authgw, plain HTTP: ES256 + role-rules plugin + revocation (d.)",
        "nginx-tls": "nginx TLS, reverse proxy, no auth",
        "authgw-tls": "authgw TLS, full path: ES256 + role-rules plugin + revocation",
        "authgw-tls-pub": "authgw TLS, `auth = \"public\"` route, no plugin (TLS + proxy only)",
    }
    md = []
    w = md.append
    w("## TLS at the edge (issue 22)")
    w("")
    w(f"Run {meta['started']} on {meta['machine']}; load average {meta['load_before']} before, "
      f"{meta.get('load_after', '?')} after. {meta['rounds']} rounds, systems alternated in each round; "
      f"medians over the rounds. System under test on CPU {meta['sut_cpus']}, load and the upstream "
      f"on CPU {meta['load_cpus']}; \"SUT CPU\" is the user + system time of the system's processes "
      f"during the run (nginx: master + worker).")
    w("")
    w(f"Negotiated: {tls.get('negotiated', '?')}. Certificate: {tls.get('cert', '?')}. "
      f"HTTP/1.1 keep-alive: `{tls.get('wrk_args', '?')}`; h2: `{tls.get('h2_args', '?')}`.")
    w("")
    w("| system | protocol | req/s | p50 / mean | p99 | SUT CPU | SUT µs/req | ratio vs nginx | errors | runs (req/s) |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    rps = {}
    for test, proto, systems, base in (
        ("tls_h1", "HTTP/1.1 keep-alive", ["nginx", "authgw"], "nginx"),
        ("tls_h1", "HTTP/1.1 keep-alive over TLS", ["nginx-tls", "authgw-tls", "authgw-tls-pub"], "nginx-tls"),
        ("tls_h2", "h2 over TLS", ["nginx-tls", "authgw-tls", "authgw-tls-pub"], "nginx-tls"),
    ):
        for s in systems:
            rs = pick(test=test, system=s)
            if not rs:
                continue
            rps[(test, s)] = med(rs, "rps")
            share, per = cpu(rs)
            lat = med(rs, "p50_us") if test == "tls_h1" else med(rs, "mean_us")
            lat_s = "-" if lat is None else f"{lat / 1000:.2f} ms" + ("" if test == "tls_h1" else " (mean)")
            p99 = med(rs, "p99_us")
            w(f"| {names[s]} | {proto} | {num(rps[(test, s)])} | {lat_s} | "
              f"{'-' if p99 is None else f'{p99 / 1000:.2f} ms'} | {num(share, '{:.0f} %')} | {num(per, '{:.1f}')} | "
              f"{num(ratio(rps[(test, s)], rps.get((test, base))), '{:.2f}×')} | {errs(rs)} | "
              f"{', '.join(num(r['rps']) for r in rs)} |")
    w("")

    hs = {}
    w(f"New connections, one request each (`GET` proxied to the upstream, no token; "
      f"{tls.get('hs_clients', '?')} concurrent clients):")
    w("")
    w("| system | handshake | connections/s | SUT CPU | SUT µs/connection | connections per SUT CPU-second "
      "| ratio vs nginx (conn/s) | ratio vs nginx (per CPU-s) | errors | runs (conn/s) |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for test, mode in (("tls_hs_full", f"full, no resumption ({tls.get('hs_full_tool', 's_time -new')})"),
                       ("tls_hs_resumed", f"resumed ({tls.get('hs_resumed_tool', 'h2load')})")):
        for s in ("nginx-tls", "authgw-tls-pub"):
            rs = pick(test=test, system=s)
            if not rs:
                continue
            share, per = cpu(rs)
            per_cpu_s = None if not per else 1e6 / per
            hs[(test, s)] = (med(rs, "rps"), per_cpu_s)
            base = hs.get((test, "nginx-tls"), (None, None))
            w(f"| {names[s]} | {mode} | {num(hs[(test, s)][0])} | {num(share, '{:.0f} %')} | {num(per, '{:.1f}')} | "
              f"{num(per_cpu_s)} | {num(ratio(hs[(test, s)][0], base[0]), '{:.2f}×')} | "
              f"{num(ratio(per_cpu_s, base[1]), '{:.2f}×')} | {errs(rs)} | {', '.join(num(r['rps']) for r in rs)} |")
    w("")
    res = tls.get("resumes") or {}
    if res:
        w("A second `openssl s_client` connection given the first one's session resumed it: "
          + ", ".join(f"{s}: {v}" for s, v in res.items()) + ".")
        w("")

    def r_(test, a, b):
        return num(ratio(rps.get((test, a)), rps.get((test, b))), "{:.2f}×")

    w(f"Ratios (req/s): authgw TLS full path / nginx TLS: HTTP/1.1 **{r_('tls_h1', 'authgw-tls', 'nginx-tls')}**, "
      f"h2 **{r_('tls_h2', 'authgw-tls', 'nginx-tls')}**; authgw TLS public route / nginx TLS: "
      f"HTTP/1.1 **{r_('tls_h1', 'authgw-tls-pub', 'nginx-tls')}**, h2 **{r_('tls_h2', 'authgw-tls-pub', 'nginx-tls')}**. "
      f"TLS on plain (HTTP/1.1): nginx {r_('tls_h1', 'nginx-tls', 'nginx')}, authgw full path "
      f"{r_('tls_h1', 'authgw-tls', 'authgw')}. The auth (token + plugin + revocation) over TLS: "
      f"authgw full / public HTTP/1.1 {r_('tls_h1', 'authgw-tls', 'authgw-tls-pub')}, "
      f"h2 {r_('tls_h2', 'authgw-tls', 'authgw-tls-pub')}.")
    w("")
    full_n, full_a = hs.get(("tls_hs_full", "nginx-tls")), hs.get(("tls_hs_full", "authgw-tls-pub"))
    if full_n and full_a:
        w(f"New full handshakes: authgw/nginx **{num(ratio(full_a[0], full_n[0]), '{:.2f}×')}** per second, "
          f"**{num(ratio(full_a[1], full_n[1]), '{:.2f}×')}** per SUT CPU-second.")
        w("")

    text = "\n".join(md) + "\n"
    path = out / "summary.md"
    if append and path.exists():
        text_all = path.read_text() + "\n" + text
    else:
        text_all = text
    path.write_text(text_all)
    print(text)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "h2load":
        print(json.dumps(h2load(sys.argv[2])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "stime":
        print(json.dumps(stime(float(sys.argv[2]), sys.argv[3:])))
    elif len(sys.argv) >= 3 and sys.argv[1] == "summary":
        summary(Path(sys.argv[2]), "--append" in sys.argv[3:])
    else:
        die(__doc__)


main()
