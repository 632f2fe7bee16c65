#!/bin/sh
# check.sh BUILD... - run the unit tests and the end-to-end tests once per
# build directory (the plain build, then the sanitizer build) and print
# one line per test and the summary "N passed, N failed, N skipped".
# A test script exits 0 (pass), 77 (skip) or anything else (fail); a test
# that cannot run is a failure, never silently dropped.
# With MXB_FUZZ=DIR (make check sets build-fuzz) every test/fuzz/fuzz_NAME.c
# is one more test, fuzz/NAME: DIR/fuzz_NAME runs MXB_FUZZ_SECONDS (5) on
# its seed corpus, a smoke that keeps the targets building and running; one
# that was not built fails.
# The end-to-end suite runs once per build with a different number of
# worker threads: the first build with MXB_WORKERS=1, the others with the
# default (auto: one per core), so the whole suite passes both ways.
cd "$(dirname "$0")/.." || exit 1
[ $# -gt 0 ] || set -- build
pass=0 fail=0 skip=0 failed=""
logdir=${MXB_CHECK_LOGS:-/tmp/mxb-check.$$}
mkdir -p "$logdir"
[ "$(id -u)" -eq 0 ] || echo "check: not root: end-to-end tests will fail" >&2

# record NAME RC - count one result
record() {
	case $2 in
	0) pass=$((pass + 1)); echo "PASS $1" ;;
	77) skip=$((skip + 1)); echo "SKIP $1: $(tail -n 1 "$3")" ;;
	*) fail=$((fail + 1)); failed="$failed $1"
	   echo "FAIL $1 (exit $2), last lines of $3:"
	   tail -n 25 "$3" | sed 's/^/    /' ;;
	esac
}

# sancheck LOG - move new sanitizer reports into LOG; fail if there were any
sancheck() {
	set -- "$1" "$san"/*san.*
	[ -e "$2" ] || return 0
	log=$1; shift
	for r in "$@"; do
		{ echo "--- sanitizer report $r"; cat "$r"; } >>"$log"
		mkdir -p "$san/seen"; mv "$r" "$san/seen/"
	done
	return 1
}

# sysnow - the kernel's log lines so far of processes that the daemon's
# system-call filter killed (audit type 1326); none when the kernel log
# cannot be read, which sandboxcheck then says in the test's log
sysnow() { dmesg 2>/dev/null | grep 'type=1326' | grep -c 'comm="mxbridge' ; }

# sandboxcheck LOG BEFORE - fail if the filter killed a daemon since
sandboxcheck() {
	dmesg >/dev/null 2>&1 || {
		echo "check: the kernel log is not readable: a daemon killed by its system-call filter shows only as a failed test" >>"$1"
		return 0
	}
	now=$(sysnow)
	[ "$now" -le "$2" ] && return 0
	{ echo "--- the system-call filter killed mxbridge:"
	  dmesg | grep 'type=1326' | grep 'comm="mxbridge' | tail -n $((now - $2)); } >>"$1"
	return 1
}

for b in "$@"; do
	if [ ! -x "$b/mxbridge" ]; then
		record "$b/build" 1 /dev/null
		continue
	fi
	tag=$(basename "$b")
	if [ "$b" = "$1" ]; then workers=1; else workers=auto; fi
	echo "# $tag: end-to-end tests with workers $workers"
	# sanitizer reports of any program in this build land here; a test
	# after which a report appears has failed whatever it printed
	san=$logdir/san-$tag
	mkdir -p "$san"
	# the daemon writes its reports after it dropped to its user
	chmod 1777 "$san"
	export ASAN_OPTIONS="log_path=$san/asan:detect_leaks=1"
	export UBSAN_OPTIONS="log_path=$san/ubsan:print_stacktrace=1"
	for t in "$b"/test/test_*; do
		[ -x "$t" ] || continue
		name="$tag/unit/$(basename "$t")"
		log="$logdir/$(echo "$name" | tr / _).log"
		before=$(sysnow)
		"$t" >"$log" 2>&1
		rc=$?
		sancheck "$log" || rc=1
		sandboxcheck "$log" "$before" || rc=1
		record "$name" $rc "$log"
	done
	for t in test/e2e/t-*.sh; do
		[ -f "$t" ] || continue
		name="$tag/e2e/$(basename "$t" .sh)"
		log="$logdir/$(echo "$name" | tr / _).log"
		before=$(sysnow)
		MXB_BIN="$(cd "$b" && pwd)" MXB_BUILD_TAG="$tag" \
		    MXB_WORKERS=$workers timeout 300 bash "$t" \
		    >"$log" 2>&1
		rc=$?
		sancheck "$log" || rc=1
		sandboxcheck "$log" "$before" || rc=1
		record "$name" $rc "$log"
	done
done
# the fuzz smoke: a crash, a sanitizer report or a broken invariant ends
# the target with a non-zero status and its reproducer in the log folder
if [ -n "${MXB_FUZZ:-}" ]; then
	for src in test/fuzz/fuzz_*.c; do
		[ -f "$src" ] || continue
		n=$(basename "$src" .c)
		n=${n#fuzz_}
		log="$logdir/fuzz_$n.log"
		out="$logdir/fuzz-$n"
		mkdir -p "$out/corpus" "$out/crashes"
		if [ ! -x "$MXB_FUZZ/fuzz_$n" ]; then
			echo "not built: $MXB_FUZZ/fuzz_$n (make fuzzers)" >"$log"
			record "fuzz/$n" 1 "$log"
			continue
		fi
		seeds=test/fuzz/corpus/$n
		[ -d "$seeds" ] || seeds=
		dict=
		[ -f "test/fuzz/$n.dict" ] && dict=-dict=test/fuzz/$n.dict
		TMPDIR=$out ASAN_OPTIONS=detect_leaks=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		timeout -k 10 120 "$MXB_FUZZ/fuzz_$n" \
		    -max_total_time="${MXB_FUZZ_SECONDS:-5}" -timeout=20 \
		    -rss_limit_mb=2048 -close_fd_mask=2 -error_exitcode=1 \
		    -artifact_prefix="$out/crashes/" $dict "$out/corpus" $seeds \
		    >"$log" 2>&1
		rc=$?
		for c in "$out"/crashes/*; do
			[ -e "$c" ] && echo "reproducer: $c" >>"$log"
		done
		record "fuzz/$n" $rc "$log"
	done
fi
[ -n "$failed" ] && echo "failed:$failed"
echo "logs in $logdir"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
