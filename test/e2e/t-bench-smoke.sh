#!/bin/sh
# The benchmark harness in smoke mode (tiny counts, ~30 s): every row of
# test/bench.sh is measured with a positive msg/s, and the JSON file has
# the date, nproc, the parameters, the concurrency, passed flows, latency and connection
# setup results; rows 7-9 (rspamd as milter) with rspamd's CPU, rows
# 10-11 (metrics scraped) with their scrape counts.  A row that prints
# "n/a (reason)" fails this test: the reason is in the output.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
need smtp-source smtp-sink haproxy postfix python3 rspamd

json=$(mktemp /tmp/mxb-bench-smoke.XXXXXX.json) || fail "mktemp"
out=$(mktemp /tmp/mxb-bench-smoke.XXXXXX.out) || fail "mktemp"
trap 'rm -f "$json" "$out"' EXIT
rm -f "$json"

sh "$TB_REPO/test/bench.sh" --smoke -o "$json" >"$out" 2>&1
rc=$?
cat "$out"
[ $rc = 77 ] && skip "bench.sh: $(tail -n 1 "$out")"
[ -s "$json" ] || fail "bench.sh (exit $rc) wrote no $json"

python3 - "$json" <<'EOF' || fail "results incomplete (see above)"
import json, sys
d = json.load(open(sys.argv[1]))
bad = []
for k in ("date", "nproc", "messages", "size_kb", "sessions"):
    if not d.get(k):
        bad.append("no %s" % k)
rows = {str(r.get("id")): r for r in d.get("rows", [])}
for i in [str(k) for k in range(1, 12)]:
    r = rows.get(i)
    if r is None:
        bad.append("row %s missing" % i)
    elif r.get("status") != "ok":
        bad.append("row %s n/a (%s)" % (i, r.get("reason")))
    elif not (isinstance(r.get("msg_s"), (int, float)) and r["msg_s"] > 0):
        bad.append("row %s msg/s %r" % (i, r.get("msg_s")))
    elif i in ("5", "6", "7", "8", "11") and not (isinstance(r.get("delivered_s"), (int, float)) and r["delivered_s"] > 0):
        bad.append("row %s delivered/s %r" % (i, r.get("delivered_s")))
for i, peer in (("3", "2"), ("4", "1"), ("6", "5"), ("8", "7"), ("9", "3"), ("10", "3"), ("11", "6")):
    if rows.get(i, {}).get("status") == "ok" and not rows[i].get("ratio_msg_s"):
        bad.append("row %s: no ratio to row %s" % (i, peer))
# the rspamd rows: rspamd's own CPU recorded (the run checked it scanned
# every message), and the proxy's CPU per message against the peer's
for i in ("10", "11"):
    # (the run checked one scrape a second of its load; a smoke load is
    # shorter than a second, so its count may be 0)
    if rows.get(i, {}).get("status") == "ok" and not isinstance(rows[i].get("scrapes"), int):
        bad.append("row %s: no scrape count" % i)
for i in "789":
    if rows.get(i, {}).get("status") == "ok" and not isinstance(rows[i].get("milter_cpu_s"), (int, float)):
        bad.append("row %s: no milter_cpu_s" % i)
for i in "89":
    if rows.get(i, {}).get("status") == "ok" and not rows[i].get("ratio_cpu_per_msg"):
        bad.append("row %s: no CPU per message ratio" % i)
c = d.get("concurrency", {})
if c.get("status") != "ok":
    bad.append("concurrency n/a (%s)" % c.get("reason"))
pf = d.get("passflows", {})
if pf.get("status") != "ok":
    bad.append("passed flows n/a (%s)" % pf.get("reason"))
else:
    r = pf.get("result") or {}
    n = r.get("flows", 0)
    if not n or r.get("round1_ok") != n or r.get("round2_ok") != n or r.get("set_after_idle") != 0 \
            or r.get("set_held", 0) < 2 * n:
        bad.append("passed flows: %r" % r)
lat = d.get("latency", {})
for k in ("direct", "relay", "incoming"):
    v = lat.get(k) or {}
    if not v.get("median_ms"):
        bad.append("latency %s n/a (%s)" % (k, v.get("reason")))
if d.get("connrate", {}).get("status") != "ok":
    bad.append("connection rate n/a (%s)" % d.get("connrate", {}).get("reason"))
if d.get("daemon_trouble"):
    bad.append("daemon trouble: %s" % "; ".join(d.get("notes", [])))
for b in bad:
    print("missing: " + b)
sys.exit(1 if bad else 0)
EOF
pass "every row measured (bench.sh exit $rc)"
