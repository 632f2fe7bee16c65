#!/bin/sh
# run.sh BINDIR CORPUSDIR OUTDIR SECONDS [PARALLEL] - run every fuzz_NAME
# in BINDIR for SECONDS on CORPUSDIR/NAME, PARALLEL at a time (default 1).
# Per target, OUTDIR/NAME/ gets: corpus/ (new inputs; the tree's corpus
# is only read, unless FUZZ_MERGE=1 merges the new ones into it), crashes/
# (reproducers), log, status (exit code) and stats (the last line with the
# cov: and ft: figures).  Prints one line per target and exits non-zero if
# any failed.  Used by "make fuzz" and by the bundle's run.sh.
# FUZZ_ARGS adds libFuzzer flags (e.g. "-fork=1 -ignore_crashes=1" to go
# on past a known failure).
[ $# -ge 4 ] || { echo "usage: run.sh BINDIR CORPUSDIR OUTDIR SECONDS [PARALLEL]" >&2; exit 2; }
bin=$1 corp=$2 out=$3 secs=$4 par=${5:-1}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)

# one NAME - run target NAME; its result in $out/NAME/status
one() {
	d=$out/$1
	rm -rf "$d"
	mkdir -p "$d/corpus" "$d/crashes"
	seeds=$corp/$1
	[ -d "$seeds" ] || seeds=
	dict=
	[ -f "$corp/../$1.dict" ] && dict=-dict=$corp/../$1.dict
	# stderr of the target itself is closed (its warnings would slow the
	# run); libFuzzer's and the sanitizers' reports still come through
	# a target's temporary folder is left behind when it crashes: here
	TMPDIR=$d \
	ASAN_OPTIONS=${FUZZ_ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	timeout -k 10 $((secs + 120)) "$bin/fuzz_$1" -max_total_time="$secs" \
	    -timeout=20 -rss_limit_mb=2048 -close_fd_mask=2 -error_exitcode=1 \
	    -print_final_stats=1 -artifact_prefix="$d/crashes/" \
	    ${FUZZ_ARGS:-} $dict "$d/corpus" $seeds >"$d/log" 2>&1
	echo $? >"$d/status"
	grep -E '^#[0-9]+.*cov: ' "$d/log" | tail -n 1 >"$d/stats"
	if [ "${FUZZ_MERGE:-0}" = 1 ] && [ -n "$seeds" ]; then
		"$bin/fuzz_$1" -merge=1 -close_fd_mask=2 "$seeds" "$d/corpus" \
		    >>"$d/log" 2>&1
	fi
}

# report NAME - its line; 1 if it failed
report() {
	d=$out/$1
	rc=$(cat "$d/status" 2>/dev/null || echo 1)
	if [ "$rc" = 0 ]; then
		echo "PASS fuzz/$1 ${secs}s: $(sed 's/^#\([0-9]*\).*\(cov: [0-9]*\).*\(ft: [0-9]*\).*/\2 \3 execs: \1/' "$d/stats")"
		return 0
	fi
	echo "FAIL fuzz/$1 (exit $rc), log $d/log"
	for c in "$d"/crashes/*; do
		[ -e "$c" ] && echo "    reproducer: $c (run: $bin/fuzz_$1 $c)"
	done
	grep -E 'ERROR: |SUMMARY: |fuzz_[a-z0-9]*: |runtime error' "$d/log" |
	    head -n 5 | sed 's/^/    /'
	return 1
}

names=
for f in "$bin"/fuzz_*; do
	[ -x "$f" ] && [ -f "$f" ] && names="$names ${f##*/fuzz_}"
done
[ -n "$names" ] || { echo "run.sh: no fuzz_* in $bin" >&2; exit 1; }
running=0
for n in $names; do
	one "$n" &
	running=$((running + 1))
	if [ "$running" -ge "$par" ]; then
		wait
		running=0
	fi
done
wait
fail=0
for n in $names; do
	report "$n" || fail=1
done
exit $fail
