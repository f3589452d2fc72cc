#!/usr/bin/env bash
# Tests of cross/size-guard.sh (issue 17's size budget).
#
#   cross/size-guard-test.sh [BINARY]
#
# Without an argument (no chroot, no root needed, ~2 s): a real lld link of a small program whose objects sit in
# <Module>.build/ folders and archives, as SwiftPM's do, made with the host toolchain's clang and ld.lld. Its map
# goes through the guard: the per-part rows are checked against the bytes each input was given, the rows add up to
# the file, and every way the guard refuses or fails is exercised.
# With BINARY (cross/out/aarch64/edged right after cross/build.sh; root, the cross cache; ~30 s): the guard on the
# shipped binary: under the real limit it passes with one line; at a 1 MiB limit it relinks the build's recorded link
# with a map and must fail with a table that adds up to the file, and the relink's own failures are checked.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUARD=$ROOT/cross/size-guard.sh
REAL=${1:-}
T=$(mktemp -d "${TMPDIR:-/tmp}/size-guard-test.XXXXXX")
CLEANUP=("$T")
trap 'rm -rf "${CLEANUP[@]}"' EXIT
passed=0 failed=0 start=$SECONDS

tool() {
    local t
    for t in "$(command -v "$1" 2>/dev/null)" "$(dirname "$(readlink -f "$(command -v swift 2>/dev/null || echo /x)")")/$1"; do
        [ -x "$t" ] && { echo "$t"; return; }
    done
    echo "size-guard-test: $1 not found (the Swift toolchain's clang, ld.lld and llvm-objcopy are needed)" >&2
    exit 2
}
CLANG=$(tool clang) LLD=$(tool ld.lld) AR=$(tool llvm-ar) OBJCOPY=$(tool llvm-objcopy)

# run NAME EXPECTED_STATUS ARGS...: runs the guard, keeps its output in $OUT, checks the status.
OUT=""
run() {
    local name=$1 want=$2 got; shift 2
    OUT=$("$@" 2>&1); got=$?
    CASE=$name
    CASE_FAILED=0
    if [ "$got" != "$want" ]; then
        bad "exit status $got, expected $want"
        return 1
    fi
    return 0
}
bad() {
    echo "FAIL $CASE: $*"; printf '%s\n' "$OUT" | sed 's/^/    | /'
    [ "$CASE_FAILED" = 1 ] || failed=$((failed + 1))
    CASE_FAILED=1
}
begin() { CASE_FAILED=0; }
has() { printf '%s\n' "$OUT" | grep -qF -- "$1" || bad "output lacks '$1'"; }
lacks() { ! printf '%s\n' "$OUT" | grep -qF -- "$1" || bad "output has '$1'"; }
done_case() { [ "$CASE_FAILED" = 1 ] || { echo "ok   $CASE"; passed=$((passed + 1)); }; }

# The table's rows as "bytes<TAB>part" (bytes without commas), the total row left out.
rows() {
    printf '%s\n' "$OUT" | sed -nE 's/^  (.*[^ ]) +([0-9,]+) +[0-9.]+ +[0-9.]+%.*/\2\t\1/p' \
        | awk -F '\t' -v OFS='\t' '$2 != "total (the stripped file)" { gsub(/,/, "", $1); print }'
}
row() { rows | awk -F '\t' -v p="$1" '$2 == p { print $1 }'; }
total_row() { printf '%s\n' "$OUT" | sed -nE 's/^  total \(the stripped file\) +([0-9,]+) .*/\1/p' | tr -d ,; }
# Checks that the rows add up to the file's size, and the part that is not sections (headers, padding) is small.
check_sum() {
    local file=$1 size sum rest
    size=$(stat -c %s "$file")
    sum=$(rows | awk -F '\t' '{ s += $1 } END { print s + 0 }')
    rest=$(row "ELF headers, alignment padding")
    [ "$(total_row)" = "$size" ] || bad "total row $(total_row) is not the file's size $size"
    [ "$sum" = "$size" ] || bad "the rows add up to $sum, the file has $size bytes"
    [ -n "$rest" ] && [ "$rest" -ge 0 ] && [ $((rest * 100)) -le $((size * 2)) ] \
        || bad "headers and padding $rest bytes: more than 2 % of $size (the map does not account for the file)"
}
# between PART LOW HIGH: the row of PART is within [LOW, HIGH].
between() {
    local v; v=$(row "$1")
    [ -n "$v" ] && [ "$v" -ge "$2" ] && [ "$v" -le "$3" ] || bad "row '$1' is '${v:-absent}', expected $2..$3 bytes"
}

# --- a small real link, laid out like SwiftPM's -------------------------------------------------------------------
B=$T/build/x86_64-unknown-linux-gnu/release
mkdir -p "$B/EdgedCore.build" "$B/NIOCore.build" "$B/CNIOBoringSSL.build/crypto" "$B/Mystery.build" "$T/lib" \
    "$T/checkouts/swift-nio/Sources/NIOCore" "$T/bin"
# Each input gives the binary a known number of bytes (an array in .rodata or .data) and a function.
obj() { # obj OUTPUT SYMBOL BYTES [const]
    printf '%s char %s[%d] = {1, 2, 3};\nint %s_fn(int i) { return %s[i]; }\n' "${4:-}" "$2" "$3" "$2" "$2" >"$T/src.c"
    "$CLANG" --target=x86_64-unknown-linux-gnu -O1 -fno-pic -ffunction-sections -fdata-sections \
        -fno-asynchronous-unwind-tables -fno-unwind-tables -c "$T/src.c" -o "$1" || exit 2
}
obj "$B/EdgedCore.build/Core.c.o" core_data 200000
obj "$B/NIOCore.build/Buffer.c.o" nio_table 50000 const
obj "$B/CNIOBoringSSL.build/crypto/sha.c.o" bssl_table 30000 const
obj "$B/Mystery.build/m.c.o" mystery 20000 const
obj "$T/sqlite3.o" sqlite_pages 40000
obj "$T/foo.o" foo_data 10000 const
obj "$T/unused.o" unused_data 70000 const   # in an archive, never referenced: not linked, not counted
"$AR" rcs "$T/lib/libsqlite3.a" "$T/sqlite3.o" && "$AR" rcs "$T/lib/libfoo.a" "$T/foo.o" "$T/unused.o" || exit 2
cat >"$T/start.c" <<'EOF'
int core_data_fn(int), nio_table_fn(int), bssl_table_fn(int), mystery_fn(int), sqlite_pages_fn(int), foo_data_fn(int);
void _start(void) {
    volatile int s = core_data_fn(1) + nio_table_fn(1) + bssl_table_fn(1) + mystery_fn(1) + sqlite_pages_fn(1) + foo_data_fn(1);
    (void)s;
    for (;;) {}
}
EOF
"$CLANG" --target=x86_64-unknown-linux-gnu -O1 -fno-pic -fno-asynchronous-unwind-tables -c "$T/start.c" -o "$T/start.o" || exit 2
link() { # link OUTPUT MAP [extra objects]
    local out=$1 map=$2; shift 2
    "$LLD" -static -e _start --gc-sections -Map="$map" -o "$out.full" "$T/start.o" "$B/EdgedCore.build/Core.c.o" \
        "$B/NIOCore.build/Buffer.c.o" "$B/CNIOBoringSSL.build/crypto/sha.c.o" "$B/Mystery.build/m.c.o" "$@" \
        -L"$T/lib" -lsqlite3 -lfoo || exit 2
    "$OBJCOPY" --strip-all "$out.full" "$out" || exit 2
}
BIN=$T/bin/edged
link "$BIN" "$T/edged.map"
SIZE=$(stat -c %s "$BIN")
G=(bash "$GUARD" --map "$T/edged.map" --packages "$T/checkouts")

begin; run "over the limit: fails with the per-part table" 1 "${G[@]}" --limit 100000 "$BIN" && {
    has "size guard: x86_64 edged is "
    has "over the limit of 100,000 bytes"
    has "size guard: FAILED"
    has "find the part that grew (the table above"
    between "edged's own modules (Sources/)" 200000 200064
    between "SwiftNIO (nio, nio-http2, nio-ssl)" 50000 50064
    between "BoringSSL (twice: swift-nio-ssl, swift-crypto)" 30000 30064
    between "module Mystery (package unknown)" 20000 20064
    between "SQLite (libsqlite3.a)" 40000 40064
    between "other: libfoo.a" 10000 10064
    lacks "unused"
    check_sum "$BIN"
    # sorted by size, largest first
    [ "$(rows | head -n1 | cut -f2)" = "edged's own modules (Sources/)" ] || bad "the largest part is not first"
}; done_case

begin; run "under the limit: one line with the headroom, no table" 0 "${G[@]}" --limit $((SIZE + 4096)) "$BIN" && {
    has "headroom 4,096 bytes"
    lacks "where the"
    [ "$(printf '%s\n' "$OUT" | wc -l)" = 1 ] || bad "more than one line"
}; done_case

begin; run "exactly at the limit passes" 0 "${G[@]}" --limit "$SIZE" "$BIN" && has "headroom 0 bytes"; done_case

begin; run "--table under the limit: the table, status 0" 0 "${G[@]}" --table --limit 31457280 "$BIN" && {
    has "where the"; lacks "FAILED"; check_sum "$BIN"
}; done_case

begin; run "EDGED_SIZE_LIMIT_BYTES sets the limit" 1 env EDGED_SIZE_LIMIT_BYTES=1000 "${G[@]}" "$BIN" && has "limit of 1,000 bytes"; done_case
begin; run "the default limit is 30 MiB" 0 env -u EDGED_SIZE_LIMIT_BYTES "${G[@]}" "$BIN" && has "limit 31,457,280 (30.00 MiB)"; done_case

# --- wrong use ---------------------------------------------------------------------------------------------------
begin; run "no binary: usage" 2 bash "$GUARD" && has "usage:"; done_case
begin; run "two binaries: usage" 2 bash "$GUARD" "$BIN" "$BIN" && has "usage:"; done_case
begin; run "unknown option" 2 bash "$GUARD" --limt 5 "$BIN" && has "unknown option --limt"; done_case
begin; run "option without its value" 2 bash "$GUARD" "$BIN" --limit && has "usage:"; done_case
begin; run "limit not a number" 2 bash "$GUARD" --limit 30MiB "$BIN" && has "positive number of bytes"; done_case
begin; run "limit zero" 2 env EDGED_SIZE_LIMIT_BYTES=0 bash "$GUARD" "$BIN" && has "not '0'"; done_case
begin; run "binary missing" 2 bash "$GUARD" "$T/nothing" && has "does not exist: build it first"; done_case
printf 'not an ELF file\n' >"$T/text"
begin; run "binary not ELF" 2 bash "$GUARD" "$T/text" && has "is not an ELF file"; done_case
"$OBJCOPY" --strip-sections "$BIN" "$T/bin/nosections" || exit 2
begin; run "binary without section headers" 2 bash "$GUARD" --limit 1 --map "$T/edged.map" "$T/bin/nosections" && has "no section headers"; done_case
begin; run "--chroot without --scratch" 2 bash "$GUARD" --chroot / "$BIN" && has "go together"; done_case
begin; run "--scratch without --chroot" 2 bash "$GUARD" --scratch /work/x "$BIN" && has "go together"; done_case
begin; run "--map of a missing file" 2 bash "$GUARD" --map "$T/none.map" "$BIN" && has "the map $T/none.map does not exist"; done_case

# --- a map that cannot describe the binary: over the limit the guard still fails (1), with --table it is 2 ----------
: >"$T/empty.map"
begin; run "empty map, over the limit: still fails" 1 bash "$GUARD" --limit 1 --map "$T/empty.map" "$BIN" && {
    has "no per-part table: the map $T/empty.map is empty"; has "size guard: FAILED"
    has "make the per-part table once the cause above is fixed"; lacks "the table above"
}; done_case
begin; run "empty map, --table under the limit" 2 bash "$GUARD" --table --map "$T/empty.map" "$BIN" && {
    has "is empty"; lacks "FAILED"
}; done_case
printf 'Archive member included to satisfy reference by file (symbol)\n' >"$T/gnu.map"
begin; run "not an lld map" 1 bash "$GUARD" --limit 1 --map "$T/gnu.map" "$BIN" && has "is not an lld link map"; done_case
# The same program with one input more: a map of another link.
obj "$B/EdgedCore.build/Extra.c.o" extra_data 3000
sed -i 's/^void _start(void) {$/int extra_data_fn(int);\nvoid _start(void) { extra_data_fn(0);/' "$T/start.c"
"$CLANG" --target=x86_64-unknown-linux-gnu -O1 -fno-pic -fno-asynchronous-unwind-tables -c "$T/start.c" -o "$T/start.o" || exit 2
link "$T/bin/other" "$T/other.map" "$B/EdgedCore.build/Extra.c.o"
begin; run "map of another link" 1 bash "$GUARD" --limit 1 --map "$T/other.map" "$BIN" && {
    has "is not the map of the link that made $BIN"; has "bytes in the map,"; has "size guard: FAILED"
}; done_case
begin; run "the other link with its own map" 1 bash "$GUARD" --limit 1 --map "$T/other.map" --packages "$T/checkouts" "$T/bin/other" && {
    between "edged's own modules (Sources/)" 203000 203128; check_sum "$T/bin/other"
}; done_case

# --- making the map: the relink's preconditions (no chroot needed to refuse) ----------------------------------------
chmod 755 "$T" "$T/bin"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    # nobody runs a copy of the guard in $T: the checkout may sit below a directory only root can enter (a fresh
    # clone in mktemp -d's 0700 directory), where bash could not even open the script (exit 126).
    mkdir -p "$T/cross" && cp "$GUARD" "$T/cross/size-guard.sh" && chmod 755 "$T/cross" "$T/cross/size-guard.sh"
    begin; run "relink needs root" 1 setpriv --reuid=65534 --regid=65534 --clear-groups bash "$T/cross/size-guard.sh" --limit 1 "$BIN" && {
        has "needs root"; has "size guard: FAILED"
    }; done_case
elif [ "$(id -u)" != 0 ]; then
    begin; run "relink needs root" 1 bash "$GUARD" --limit 1 "$BIN" && has "needs root"; done_case
fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$T/cache"
    begin; run "no build folder in the cache linked the binary" 1 env EDGED_CROSS_CACHE="$T/cache" bash "$GUARD" --limit 1 "$BIN" && {
        has "no build folder in $T/cache linked $BIN"; has "size guard: FAILED"
    }; done_case
    begin; run "no cross build cache" 1 env EDGED_CROSS_CACHE="$T/no-cache" bash "$GUARD" --limit 1 "$BIN" && {
        has "there is no cross build cache $T/no-cache"; has "size guard: FAILED"
    }; done_case
    ( exec 9>>"$T/cache/.lock"; flock 9; : >"$T/locked"; exec sleep 30 ) &
    holder=$!
    for _ in $(seq 100); do [ -f "$T/locked" ] && break; sleep 0.1; done
    begin; run "the cache is locked by a running build" 1 env EDGED_CROSS_CACHE="$T/cache" EDGED_SIZE_GUARD_LOCK_WAIT_S=1 \
        bash "$GUARD" --limit 1 "$BIN" && { has "cannot lock $T/cache/.lock within 1 s"; has "size guard: FAILED"; }; done_case
    kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
    begin; run "--chroot/--scratch without a build folder" 1 bash "$GUARD" --limit 1 --chroot "$T/chroot" --scratch /work/build "$BIN" && \
        has "no build folder $T/chroot/work/build"; done_case
    mkdir -p "$T/chroot/work/build"
    printf 'client:\n  name: basic\ncommands:\n  "C.edgectl-x86_64-unknown-linux-gnu-release.exe":\n    tool: shell\n' >"$T/chroot/work/build/release.yaml"
    begin; run "build folder without a recorded link of the product" 1 bash "$GUARD" --limit 1 --chroot "$T/chroot" --scratch /work/build "$BIN" && \
        has "has no recorded link of edged (x86_64)"; done_case
    printf 'commands:\n  "C.edged-x86_64-unknown-linux-gnu-release.exe":\n    tool: shell\n    args: ["/usr/bin/swiftc","-emit-executable"]\n' >"$T/chroot/work/build/release.yaml"
    begin; run "recorded link without an output" 1 bash "$GUARD" --limit 1 --chroot "$T/chroot" --scratch /work/build "$BIN" && \
        has "has no output (-o)"; done_case
fi

# --- the shipped binary -----------------------------------------------------------------------------------------------
if [ -n "$REAL" ]; then
    [ "$(id -u)" = 0 ] || { echo "size-guard-test: the checks of $REAL relink in the cross chroot: run as root" >&2; exit 2; }
    [ -f "$REAL" ] || { echo "size-guard-test: $REAL does not exist: run cross/build.sh release first" >&2; exit 2; }
    RSIZE=$(stat -c %s "$REAL")
    begin; run "$REAL: within the 30 MiB budget" 0 env -u EDGED_SIZE_LIMIT_BYTES bash "$GUARD" "$REAL" && {
        has "headroom"; lacks "where the"
    }; done_case
    t0=$SECONDS
    begin; run "$REAL at a 1 MiB limit: relinks, fails, table adds up to the file" 1 bash "$GUARD" --limit 1048576 "$REAL" && {
        has "size guard: FAILED"; has "relinking"
        lacks "note: the relinked"
        check_sum "$REAL"
        for p in "Swift runtime + stdlib (Core, Concurrency, Dispatch, Regex)" "edged's own modules (Sources/)" \
            "FoundationEssentials" "SwiftNIO (nio, nio-http2, nio-ssl)" "BoringSSL (twice: swift-nio-ssl, swift-crypto)" \
            "swift-certificates, swift-asn1, swift-crypto" "grpc-swift-2 + swift-protobuf" "SQLite (libsqlite3.a)" \
            "glibc, libgcc, libstdc++" "libsystemd"; do
            [ -n "$(row "$p")" ] && [ "$(row "$p")" -gt 0 ] || bad "no row '$p'"
        done
        printf '%s\n' "$OUT" | sed -n '/where the/,/total (the stripped file)/p'
    }; done_case
    echo "     (the relink and table took $((SECONDS - t0)) s)"
    # A copy with one byte changed: no build folder linked it, so no table; with the build folder named (as
    # cross/build.sh does) the relinked binary differs from it and the guard says so.
    cp "$REAL" "$T/bin/edged-changed"
    off=$(grep -obaF 'edged' "$REAL" | tail -n1 | cut -d: -f1)
    printf 'E' | dd of="$T/bin/edged-changed" bs=1 seek="$off" conv=notrunc status=none
    mv "$T/bin/edged-changed" "$T/bin/edged"
    begin; run "a binary no build folder linked" 1 bash "$GUARD" --limit 1048576 "$T/bin/edged" && {
        has "no build folder in ${EDGED_CROSS_CACHE:-/var/cache/edged-cross} linked"; has "size guard: FAILED"
    }; done_case
    CHROOT=$(ls -d "${EDGED_CROSS_CACHE:-/var/cache/edged-cross}"/chroot-sid-*/ 2>/dev/null | while read -r c; do
        [ -f "$c/work/build-aarch64-release/release.yaml" ] && echo "${c%/}"; done | head -n1)
    if [ -n "$CHROOT" ]; then
        begin; run "build folder changed since the binary: the note" 1 bash "$GUARD" --limit 1048576 --chroot "$CHROOT" \
            --scratch /work/build-aarch64-release "$T/bin/edged" && { has "note: the relinked edged differs"; check_sum "$T/bin/edged"; }
        done_case
        FAKE=/work/size-guard-test-$$
        CLEANUP+=("$CHROOT$FAKE")
        mkdir -p "$CHROOT$FAKE"
        printf 'commands:\n  "C.edged-aarch64-unknown-linux-gnu-release.exe":\n    tool: shell\n    args: ["/bin/sh","-c","echo the linker broke >&2; exit 7","-o","/work/x"]\n' \
            >"$CHROOT$FAKE/release.yaml"
        begin; run "the relink fails" 1 bash "$GUARD" --limit 1048576 --chroot "$CHROOT" --scratch "$FAKE" "$REAL" && {
            has "the linker broke"; has "the relink with a map failed"; has "size guard: FAILED"
        }; done_case
    else
        echo "FAIL no cross chroot with an aarch64 release build folder in ${EDGED_CROSS_CACHE:-/var/cache/edged-cross}"
        failed=$((failed + 1))
    fi
fi

echo "size-guard-test: $passed passed, $failed failed ($((SECONDS - start)) s)"
[ "$failed" = 0 ]
