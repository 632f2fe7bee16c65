#!/bin/sh
# t-man-lint: every man page passes mandoc -Tlint at warning level, and
# every daemon and control-tool flag in the code is in its page.
cd "$(dirname "$0")/../.." || exit 1
command -v mandoc >/dev/null || { echo "mandoc missing"; exit 1; }
for m in man/mxbridge.8 man/mxbridgectl.8 man/mxbridge.conf.5 \
    man/mxbridge-netfilter.8; do
	[ -f "$m" ] || { echo "missing page $m"; exit 1; }
	out=$(mandoc -Tlint -Wwarning "$m" 2>&1)
	[ -z "$out" ] || { echo "$out"; exit 1; }
done
# flags: the getopt string of each program against its page's Fl entries
check_flags() {	# SOURCE PAGE
	opts=$(sed -n 's/.*getopt(argc, argv, "\([^"]*\)").*/\1/p' "$1" |
	    tr -d ':+')	# "+": stop at the first operand, not a flag
	[ -n "$opts" ] || { echo "no getopt string in $1"; exit 1; }
	for f in $(echo "$opts" | sed 's/./& /g'); do
		grep -q "^\.It Fl $f" "$2" ||
		    { echo "$2 does not document -$f"; exit 1; }
	done
}
check_flags daemon/mxbridge.c man/mxbridge.8
check_flags ctl/mxbridgectl.c man/mxbridgectl.8
echo "man pages clean"
