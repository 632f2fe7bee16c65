#!/bin/sh
# bundle.sh [DIR] - build the fuzz targets and put them, with every
# non-glibc shared library they need, their seed corpora and a run script,
# into DIR (default .fuzzbundle/ in the source root, ignored by git), so
# that they run on a bare x86_64 Linux machine with none of our packages
# (a newer glibc is fine: glibc's own libraries are not carried).
#
#   sh test/fuzz/bundle.sh && tar czf fuzzbundle.tgz .fuzzbundle
#   (on the target)  cd .fuzzbundle && FUZZ_SECONDS=600 OUT=/tmp/fo ./run.sh
#
# Each binary gets DT_RPATH $ORIGIN/lib (patchelf), so no LD_LIBRARY_PATH
# is needed.  Needs clang, libclang-rt-14-dev and patchelf
# (scripts/install-deps.sh installs them).
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B=${1:-$SRC/.fuzzbundle}
command -v patchelf >/dev/null || { echo "bundle.sh: needs patchelf (scripts/install-deps.sh)" >&2; exit 1; }

make -C "$SRC" WERROR=1 fuzzers
mkdir -p "$B"
B=$(cd "$B" && pwd)
rm -rf "$B/lib" "$B/corpus" "$B"/fuzz_*
mkdir -p "$B/lib"
for f in "$SRC"/build-fuzz/fuzz_*; do
	[ -f "$f" ] && [ -x "$f" ] && install -m 755 "$f" "$B/"
done
cp -R "$SRC/test/fuzz/corpus" "$B/corpus"
rm -f "$B"/*.dict
for d in "$SRC"/test/fuzz/*.dict; do
	[ -e "$d" ] && cp "$d" "$B/"
done

# every non-glibc library (the sanitizer runtimes are linked in statically)
GLIBC='^(ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libresolv\.so\.2|libutil\.so\.1|libanl\.so\.1|libmvec\.so\.1|linux-vdso\.so\.1|libBrokenLocale\.so\.1|libnss_.*)$'
for f in "$B"/fuzz_*; do
	ldd "$f"
done | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
while read -r name path; do
	echo "$name" | grep -Eq "$GLIBC" && continue
	[ -e "$B/lib/$name" ] || cp -L "$path" "$B/lib/$name"
done
# DT_RPATH (not RUNPATH): it also serves the libraries' own dependencies
for f in "$B"/fuzz_*; do
	patchelf --force-rpath --set-rpath '$ORIGIN/lib' "$f"
done
for l in "$B"/lib/*.so*; do
	[ -e "$l" ] || continue
	if readelf -d "$l" | grep -q 'R.*PATH'; then
		patchelf --set-rpath '$ORIGIN' "$l"
	fi
done

cp "$SRC/test/fuzz/run.sh" "$B/run-targets.sh"
cat >"$B/run.sh" <<'RUN'
#!/bin/sh
# run.sh - run every fuzz_NAME here at once (one process per target) for
# FUZZ_SECONDS (600) on corpus/NAME; per target, $OUT/NAME/ (OUT defaults
# to ./fuzz-out) gets stats (the last line with cov: and ft:), status (the
# exit code), log, crashes/ and corpus/ (new inputs).  Prints one line per
# target; exits non-zero if any failed.  FUZZ_ARGS adds libFuzzer flags
# ("-fork=1 -ignore_crashes=1": go on past a crash, collecting them all).
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-./fuzz-out}
n=$(ls "$here"/fuzz_* | wc -l)
exec sh "$here/run-targets.sh" "$here" "$here/corpus" "$out" \
    "${FUZZ_SECONDS:-600}" "$n"
RUN
chmod 755 "$B/run.sh" "$B/run-targets.sh"
{
	echo "built $(date -u +%Y-%m-%dT%H:%MZ) on $(. /etc/os-release; echo "$PRETTY_NAME") $(uname -m)"
	echo "mxbridge source: $(git -C "$SRC" log -1 --format='%h %s' 2>/dev/null | cut -c1-100)"
	echo "targets:$(for f in "$B"/fuzz_*; do printf ' %s' "${f##*/fuzz_}"; done)"
	ls "$B/lib"
} >"$B/VERSIONS.txt"
du -sh "$B"
