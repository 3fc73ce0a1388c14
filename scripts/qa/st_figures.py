"""Prints the figures of a Schemathesis run (scripts/schemathesis.sh) from its
JUnit report and its output: operations tested, test cases, failures, and
5xx answers in the server log. Exit status 1 when the report is missing or shows failures."""

import glob
import re
import sys
import xml.etree.ElementTree as ET


def main(report_dir: str, server_log: str, run_log: str) -> int:
    paths = glob.glob(f"{report_dir}/*.xml")
    if not paths:
        print(f"error: no JUnit report in {report_dir}")
        return 1
    root = ET.parse(paths[0]).getroot()
    cases = root.iter("testcase")
    tested = failed = errored = skipped = 0
    failing = []
    for case in cases:
        tested += 1
        if case.find("failure") is not None:
            failed += 1
            failing.append(case.get("name"))
        elif case.find("error") is not None:
            errored += 1
            failing.append(case.get("name"))
        elif case.find("skipped") is not None:
            skipped += 1
    fivexx = 0
    try:
        with open(server_log, encoding="utf-8", errors="replace") as f:
            # /readyz answers 503 until the server is ready: not under test.
            fivexx = sum(1 for line in f
                         if re.search(r"Status code: 5\d\d|internal error|panicked", line) and "/readyz" not in line)
    except OSError:
        pass
    print(f"schemathesis figures: {tested} test groups (operations and the stateful phase), "
          f"{tested - failed - errored - skipped} passed, "
          f"{failed} failed, {errored} errored, {skipped} skipped; server log lines with a 5xx/internal error: {fivexx}")
    try:
        with open(run_log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for label in ("Selected", "Tested"):
            m = re.search(rf"^\s*{label}: (\S+)", text, re.M)
            if m:
                print(f"  operations {label.lower()}: {m.group(1)}")
        m = re.search(r"^Test cases:\n\s*(.+)$", text, re.M)
        if m:
            print(f"  test cases: {m.group(1)}")
    except OSError:
        pass
    for name in failing:
        print(f"  failing: {name}")
    return 1 if failed or errored else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
