#!/bin/sh
# Builds the libFuzzer entry points in tests/fuzz/ (clang, ASan + UBSan) and
# runs each for SECONDS (default 20) on a temporary copy of its seed corpus
# in tests/fuzz/corpus/<name>/. Prints one line per fuzzer and exits non-zero
# if any of them found a crash (the input and log are kept and their place
# printed). Never writes into the source tree; builds in build-fuzz/.
#
#   scripts/fuzz.sh [SECONDS]        e.g. scripts/fuzz.sh 60
#
# Environment: FUZZERS="fuzz-spool fuzz-ipc" runs a subset; BUILD_DIR
# overrides build-fuzz.
set -eu

secs=${1:-20}
case $secs in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build-fuzz}
all="fuzz-smtp-command fuzz-smtp-path fuzz-smtp-data fuzz-smtp-reply fuzz-spool fuzz-config fuzz-ipc fuzz-dns-packet fuzz-imap-parser fuzz-imap-search fuzz-mime fuzz-pop3"
fuzzers=${FUZZERS:-$all}

# ---- tools: the project's build dependencies, clang and its fuzzer runtime
[ -x scripts/deps.sh ] && ./scripts/deps.sh
missing=""
for p in clang libclang-rt-14-dev python3; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing </dev/null
fi

# ---- build
if [ ! -f "$build/build.ninja" ]; then
	# fuzzer-no-link: coverage instrumentation for the libraries under test;
	# the fuzz executables add -fsanitize=fuzzer themselves.
	CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined \
		-Db_lundef=false -Dtests=disabled -Dc_args=-fsanitize=fuzzer-no-link
fi
# shellcheck disable=SC2086
meson compile -C "$build" $fuzzers >/dev/null

# ---- run
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
	work=$(mktemp -d /dev/shm/postern-fuzz.XXXXXX)
else
	work=$(mktemp -d)
fi
keep=0
cleanup() { [ "$keep" -eq 1 ] || rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Seeds are text; *.hex files hold binary seeds as hex ('#' starts a comment).
copy_corpus() {
	mkdir -p "$2"
	for seed in "$1"/*; do
		[ -f "$seed" ] || continue
		case $seed in
		*.hex) python3 -c 'import sys, binascii
text = "".join(l.split("#")[0] for l in open(sys.argv[1]))
open(sys.argv[2], "wb").write(binascii.unhexlify("".join(text.split())))' \
			"$seed" "$2/$(basename "$seed" .hex)" ;;
		*) cp "$seed" "$2/" ;;
		esac
	done
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
failed=0
npass=0
nfail=0
for f in $fuzzers; do
	name=${f#fuzz-}
	dir="$work/$name"
	mkdir -p "$dir/tmp"
	copy_corpus "tests/fuzz/corpus/$name" "$dir/corpus"
	rc=0
	TMPDIR="$dir/tmp" "$build/tests/fuzz/$f" -max_total_time="$secs" -timeout=5 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/" \
		"$dir/corpus" >"$dir/log" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
	[ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$dir/log" | tail -n 1)
	crashes=$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
		-o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
	if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
		crashes=1 # died without an artifact (e.g. setup failed)
	fi
	echo "$f: ${runs:-0} runs, $crashes crashes"
	if [ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ]; then
		npass=$((npass + 1))
	else
		nfail=$((nfail + 1))
	fi
	if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
		failed=1
		keep=1
		echo "  log and inputs: $dir/" >&2
		grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|.*invariant failed|.*differ)' \
			"$dir/log" | head -n 5 | sed 's/^/  /' >&2 || true
		for a in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-*; do
			[ -f "$a" ] && echo "  reproduce: $build/tests/fuzz/$f $a" >&2
		done
	fi
done
echo "fuzz: $npass passed, $nfail failed"
exit "$failed"
