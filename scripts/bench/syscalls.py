#!/usr/bin/env python3
"""Reads the summary `strace -c` writes (-o FILE) and prints it as one JSON
object: {"total": calls, "errors": failed calls, "calls": {syscall: calls}}.

    syscalls.py STRACE_OUTPUT
"""
import json
import sys

calls, errors, total, total_errors = {}, 0, None, 0
for line in open(sys.argv[1]):
    f = line.split()
    # "% time seconds usecs/call calls [errors] syscall"; the header and the
    # dashed rules do not start with a number.
    if len(f) not in (5, 6):
        continue
    try:
        n = int(f[3])
        err = int(f[4]) if len(f) == 6 else 0
        float(f[0])
    except ValueError:
        continue
    if f[-1] == "total":
        total, total_errors = n, err
    else:
        calls[f[-1]] = calls.get(f[-1], 0) + n
        errors += err
if total is None:
    total, total_errors = sum(calls.values()), errors
if not calls:
    sys.exit(f"{sys.argv[1]}: no strace -c summary")
print(json.dumps({"total": total, "errors": total_errors,
                  "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1]))}))
