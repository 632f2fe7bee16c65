#!/bin/bash
# t-intercept-bench: the smoke mode of test/bench-conn.sh (-n 50): the
# benchmark runs end to end on its own testbed, the kernel classifier and
# the queue each classify what they should (and premarked flows neither),
# and it writes its table and its JSON line.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
out=$(mktemp -d /tmp/t-intercept-bench.XXXXXX) || fail "mktemp"
trap 'rm -rf "$out"' EXIT
bash "$TB_REPO/test/bench-conn.sh" -n 50 -c 4 -r 1 -o "$out/bench.json" >"$out/table" 2>&1
rc=$?
[ $rc = 77 ] && skip "bench-conn: $(tail -n 1 "$out/table")"
[ $rc = 0 ] || fail "bench-conn.sh exit $rc: $(tail -n 5 "$out/table")"
grep -q '^kernel classified ' "$out/table" || fail "no kernel row: $(cat "$out/table")"
grep -q '^nfqueue classified ' "$out/table" || fail "no nfqueue row: $(cat "$out/table")"
grep -q '^premarked, no queue ' "$out/table" || fail "no premarked row: $(cat "$out/table")"
grep -q '^ratio kernel/premark ' "$out/table" || fail "no kernel ratio row: $(cat "$out/table")"
grep -q '^ratio nfqueue/premark ' "$out/table" || fail "no ratio row: $(cat "$out/table")"
grep -q ' failed=0 ' "$out/table" || fail "connects failed: $(tail -n 1 "$out/table")"
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1, rows
r = rows[0]
assert r["bench"] == "conn" and r["count"] == 50, r
for path in ("kernel", "nfqueue", "premarked"):
    assert r[path]["seq"] > 0 and r[path]["par"] > 0, r
assert r["classified"] >= 200, r
' "$out/bench.json" || fail "bad JSON line: $(cat "$out/bench.json")"
note "$(sed -n '3,8p' "$out/table" | tr -s ' ' | paste -sd';')"
pass "bench-conn.sh -n 50: table and JSON line"
