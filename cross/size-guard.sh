#!/usr/bin/env bash
# The size guard of the shipped binaries (issue 17): the stripped static aarch64 edged stays <= 30 MiB.
# cross/build.sh runs it on cross/out/aarch64/edged after every release build. Under the limit it prints one
# line (size, limit, headroom) and exits 0. Over it, it relinks the binary once with an lld link map, prints
# where the bytes go, part by part, and exits 1, so that whoever pushed the binary over sees what grew.
#
#   cross/size-guard.sh [--limit BYTES] [--table] [--map FILE] [--chroot DIR --scratch DIR] [--packages DIR] BINARY
#
#   BINARY          a stripped binary of cross/build.sh (cross/out/<arch>/<product>)
#   --limit BYTES   the limit; default $EDGED_SIZE_LIMIT_BYTES, else 31457280 (30 MiB)
#   --table         print the table under the limit too (to measure)
#   --map FILE      the lld map (-Xlinker -Map=FILE) of the link that made BINARY: no relink
#   --chroot DIR    the sid chroot of cross/build.sh, and
#   --scratch DIR   the SwiftPM build folder inside it (e.g. /work/build-aarch64-release): the link to replay.
#                   Without them (and without --map) the guard looks in $EDGED_CROSS_CACHE (default
#                   /var/cache/edged-cross) for the build folder whose linked product, stripped, is BINARY,
#                   after waiting (EDGED_SIZE_GUARD_LOCK_WAIT_S, default 900) for a cross/build.sh that is running.
#   --packages DIR  the folder of the package checkouts (names the package of each module); default
#                   <scratch>/checkouts (without it, each dependency module is a row of its own)
#
# The table: the bytes of BINARY's file, per part. Every section the stripped file keeps (code, data, Swift
# metadata, ...) is summed from the map's input sections, per SwiftPM module (<Module>.build/), static archive or
# object, then grouped into parts; "ELF headers, alignment padding" is the rest of the file, so the rows add up to
# the file's size. The map must be of the very link that made BINARY (checked: every section's size must match).
# Exit status: 0 under the limit; 1 over it (also when the table could not be made); 2 wrong use or unreadable
# input.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGED_CROSS_CACHE:-/var/cache/edged-cross}
LIMIT=${EDGED_SIZE_LIMIT_BYTES:-31457280}
LOCK_WAIT=${EDGED_SIZE_GUARD_LOCK_WAIT_S:-900}
BINARY="" MAP="" CHROOT="" SCRATCH="" PACKAGES="" ALWAYS_TABLE=0

usage() {
    echo "usage: $0 [--limit BYTES] [--table] [--map FILE] [--chroot DIR --scratch DIR] [--packages DIR] BINARY" >&2
    exit 2
}
fail() { echo "size guard: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --limit) [ $# -ge 2 ] || usage; LIMIT=$2; shift 2 ;;
        --table) ALWAYS_TABLE=1; shift ;;
        --map) [ $# -ge 2 ] || usage; MAP=$2; shift 2 ;;
        --chroot) [ $# -ge 2 ] || usage; CHROOT=$2; shift 2 ;;
        --scratch) [ $# -ge 2 ] || usage; SCRATCH=$2; shift 2 ;;
        --packages) [ $# -ge 2 ] || usage; PACKAGES=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "size guard: unknown option $1" >&2; usage ;;
        *) [ -z "$BINARY" ] || usage; BINARY=$1; shift ;;
    esac
done
[ -n "$BINARY" ] || usage
[[ "$LIMIT" =~ ^[0-9]+$ ]] && [ "$LIMIT" -gt 0 ] \
    || fail "the limit must be a positive number of bytes (EDGED_SIZE_LIMIT_BYTES or --limit), not '$LIMIT'"
[ -f "$BINARY" ] || fail "$BINARY does not exist: build it first (cross/build.sh release)"
{ [ -n "$CHROOT" ] && [ -z "$SCRATCH" ]; } || { [ -z "$CHROOT" ] && [ -n "$SCRATCH" ]; } \
    && fail "--chroot and --scratch go together (the chroot of cross/build.sh and the build folder inside it)"
[ -z "$MAP" ] || [ -f "$MAP" ] || fail "the map $MAP does not exist"

# 31457280 -> 31,457,280
commas() { printf '%s' "$1" | rev | sed -E 's/([0-9]{3})/\1,/g; s/,$//' | rev; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

MACHINE=$(LC_ALL=C readelf -h "$BINARY" 2>/dev/null | sed -n 's/^ *Machine: *//p') && [ -n "$MACHINE" ] \
    || fail "$BINARY is not an ELF file"
SECTIONS=$(LC_ALL=C readelf -S -W "$BINARY" 2>/dev/null) && printf '%s' "$SECTIONS" | grep -q 'Section Headers' \
    || fail "$BINARY has no section headers (stripped with --strip-sections?): the table needs them"
case "$MACHINE" in
    *AArch64*) ARCH=aarch64 ;;
    *X86-64*|*x86-64*) ARCH=x86_64 ;;
    *) ARCH=$(printf '%s' "$MACHINE" | tr -c 'A-Za-z0-9_\n' _) ;;
esac
PRODUCT=$(basename "$BINARY")
SIZE=$(stat -c %s "$BINARY")
LABEL="$ARCH $PRODUCT"

over=0
if [ "$SIZE" -gt "$LIMIT" ]; then
    over=1
    echo "size guard: $LABEL is $(commas "$SIZE") bytes ($(mib "$SIZE") MiB), $(commas $((SIZE - LIMIT))) bytes over the limit of $(commas "$LIMIT") bytes ($(mib "$LIMIT") MiB)" >&2
else
    echo "size guard: $LABEL is $(commas "$SIZE") bytes ($(mib "$SIZE") MiB), limit $(commas "$LIMIT") ($(mib "$LIMIT") MiB), headroom $(commas $((LIMIT - SIZE))) bytes ($(mib $((LIMIT - SIZE))) MiB)" >&2
    [ "$ALWAYS_TABLE" = 1 ] || exit 0
fi

# Status when the table cannot be made: over the limit the build still fails (1), else it is wrong use (2).
TABLE_FAILED_STATUS=$((over ? 1 : 2))
table_failed() {
    echo "size guard: no per-part table: $*" >&2
    [ "$over" = 1 ] && over_message "make the per-part table once the cause above is fixed: sudo cross/size-guard.sh --table $BINARY right after cross/build.sh release"
    exit "$TABLE_FAILED_STATUS"
}
# $1: where the table is.
over_message() {
    cat >&2 <<EOF
size guard: FAILED: the stripped $LABEL must stay within $(commas "$LIMIT") bytes ($(mib "$LIMIT") MiB) and is $(commas "$SIZE").
  What to do: find the part that grew ($1; compare with the table in cross/README.md, "Size")
  and take the bytes back there: a new dependency or module, a large table or resource compiled in, generic
  code specialised many times. cross/README.md, "Size", also tells what was measured and tried before. The budget
  (30 MiB, issue 17) changes only by a team decision: EDGED_SIZE_LIMIT_BYTES is for experiments, not a fix.
EOF
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/size-guard.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The chroot's link replay: a build folder (scratch, as the chroot sees it) whose link of $PRODUCT is recorded in
# <config>.yaml. Prints "<yaml> <key>" or nothing.
link_record() {
    local chroot=$1 scratch=$2 yaml key
    for yaml in "$chroot$scratch"/release.yaml "$chroot$scratch"/debug.yaml; do
        [ -f "$yaml" ] || continue
        key=$(grep -oE "^  \"C\\.$PRODUCT-$ARCH-[a-z]+-linux-gnu-(release|debug)\\.exe\":" "$yaml" | head -n1 | tr -d ' :"') || true
        [ -n "$key" ] && { printf '%s %s\n' "$yaml" "$key"; return 0; }
    done
    return 0
}

# The linked (unstripped) product of a build folder, as this machine sees it.
linked_product() {
    local chroot=$1 scratch=$2 yaml=$3 key=$4
    awk -v key="  \"$key\":" '$0 == key { f = 1; next } f && /^    outputs:/ { print; exit }' "$yaml" \
        | grep -oE '"[^"]+"' | head -n1 | tr -d '"' | sed "s|^|$chroot|"
}

# Finds the build folder of BINARY in the cache: the one whose linked product, stripped, is BINARY byte for byte.
discover_build() {
    local yaml chroot scratch rec linked objcopy
    objcopy=$(command -v llvm-objcopy || echo "$(dirname "$(readlink -f "$(command -v swift)")")/llvm-objcopy")
    for yaml in "$CACHE"/chroot-sid-*/work/build-"$ARCH"-*/release.yaml "$CACHE"/chroot-sid-*/work/build-"$ARCH"-*/debug.yaml; do
        [ -f "$yaml" ] || continue
        scratch=${yaml%/*}
        chroot=${scratch%/work/*}
        scratch=${scratch#"$chroot"}
        rec=$(link_record "$chroot" "$scratch")
        [ -n "$rec" ] || continue
        linked=$(linked_product "$chroot" "$scratch" ${rec})
        [ -f "$linked" ] || continue
        "$objcopy" --strip-all "$linked" "$WORK/candidate" 2>/dev/null || continue
        if cmp -s "$WORK/candidate" "$BINARY"; then CHROOT=$chroot SCRATCH=$scratch; return 0; fi
    done
    return 1
}

# Replays the link SwiftPM recorded, into a file of its own (the build folder is not touched, so the next build
# stays warm) with -Map. Sets MAP and RELINKED (the new binary, on this machine).
relink_with_map() {
    local rec yaml key out=/work/size-guard
    rec=$(link_record "$CHROOT" "$SCRATCH")
    [ -n "$rec" ] || table_failed "$CHROOT$SCRATCH has no recorded link of $PRODUCT ($ARCH): run cross/build.sh release"
    read -r yaml key <<<"$rec"
    # The recorded command line: a JSON list of strings on the args: line after the key.
    awk -v key="  \"$key\":" '$0 == key { f = 1; next } f && /^    args:/ { print; exit }' "$yaml" \
        | sed -E 's/^    args: \[//; s/\]$//' | grep -oE '"([^"\\]|\\.)*"' | sed -E 's/^"(.*)"$/\1/; s/\\(.)/\1/g' \
        >"$WORK/args"
    [ -s "$WORK/args" ] && grep -qx -- '-o' "$WORK/args" \
        || table_failed "the link command of $key in $yaml has no output (-o): SwiftPM's build description changed"
    mkdir -p "$CHROOT$out"
    awk -v o="$out/$PRODUCT-$ARCH" 'skip { print o; skip = 0; next } $0 == "-o" { skip = 1 } { print }' "$WORK/args" \
        >"$CHROOT$out/args"
    printf '%s\n' -Xlinker "-Map=$out/$PRODUCT-$ARCH.map" >>"$CHROOT$out/args"
    echo "size guard: relinking $PRODUCT ($ARCH) with a link map in $CHROOT (about 10-20 s)" >&2
    if ! unshare --mount --propagation private -- bash -c '
            set -e
            mount -t proc proc "$1/proc"
            mount --rbind /dev "$1/dev"
            exec chroot "$1" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 \
                bash -c "cd \"\$1\" && mapfile -t a <\"\$2/args\" && \"\${a[@]}\"" relink "$2" "$3"' \
            relink "$CHROOT" "$SCRATCH" "$out" >"$WORK/relink.log" 2>&1; then
        tail -n 20 "$WORK/relink.log" >&2
        table_failed "the relink with a map failed (above)"
    fi
    MAP=$CHROOT$out/$PRODUCT-$ARCH.map
    RELINKED=$CHROOT$out/$PRODUCT-$ARCH
    echo "size guard: the link map stays at $MAP (per input section and symbol)" >&2
}

RELINKED=""
if [ -z "$MAP" ]; then
    [ "$(id -u)" = 0 ] || table_failed "the relink runs in cross/build.sh's chroot and needs root (or pass --map FILE)"
    if [ -z "$CHROOT" ]; then
        # Not run by cross/build.sh (which holds the cache lock and names its build folder): wait for a build
        # that is running, so that the link replayed is a finished one.
        [ -d "$CACHE" ] || table_failed "there is no cross build cache $CACHE: run cross/build.sh release first, or pass --map FILE"
        if ! { exec 8>>"$CACHE/.lock"; } 2>/dev/null || ! flock -w "$LOCK_WAIT" 8; then
            table_failed "cannot lock $CACHE/.lock within $LOCK_WAIT s: a cross/build.sh still running holds it; try again when it is done"
        fi
        discover_build || table_failed "no build folder in $CACHE linked $BINARY (it is not the latest $PRODUCT of a cross/build.sh run): run cross/build.sh, or pass --map FILE"
    fi
    [ -d "$CHROOT$SCRATCH" ] || table_failed "no build folder $CHROOT$SCRATCH"
    relink_with_map
fi
[ -z "$PACKAGES" ] && [ -n "$CHROOT" ] && PACKAGES=$CHROOT$SCRATCH/checkouts
[ -s "$MAP" ] || table_failed "the map $MAP is empty"
head -n1 "$MAP" | grep -qE '^ +VMA +LMA +Size +Align +Out +In +Symbol' \
    || table_failed "$MAP is not an lld link map (-Xlinker -Map=FILE; its first line is the VMA LMA Size Align Out In Symbol header)"

# A relinked binary is the build folder's product as it is now; it must be BINARY. If the build folder changed since
# BINARY was made, the map cannot describe BINARY: the section check below says so.
if [ -n "$RELINKED" ]; then
    objcopy=$(command -v llvm-objcopy || echo "$(dirname "$(readlink -f "$(command -v swift)")")/llvm-objcopy")
    "$objcopy" --strip-all "$RELINKED" "$WORK/relinked" && cmp -s "$WORK/relinked" "$BINARY" \
        || echo "size guard: note: the relinked $PRODUCT differs from $BINARY (the build folder changed since)" >&2
    rm -f "$RELINKED"
fi

# The sections BINARY keeps in its file (everything but NOBITS and the section-name table objcopy rewrites):
# "name size" lines.
printf '%s\n' "$SECTIONS" | sed -nE 's/^ *\[ *[1-9][0-9]*\] +//p' \
    | awk '$1 != ".shstrtab" && $2 != "NOBITS" && $2 != "NULL" { print $1, $5 }' >"$WORK/sections"

# Module -> package: edged's own modules are the folders of Sources/; the others are named by their checkout.
{
    for d in "$ROOT"/Sources/*/; do [ -d "$d" ] && printf '%s (edged)\n' "$(basename "$d")"; done
    if [ -n "$PACKAGES" ] && [ -d "$PACKAGES" ]; then
        for d in "$PACKAGES"/*/Sources/*/; do
            [ -d "$d" ] && printf '%s %s\n' "$(basename "$d")" "$(basename "$(dirname "$(dirname "$d")")")"
        done
    fi
} >"$WORK/modules"

# Sums the map's input sections of the kept sections per component (module, archive or object), checks each
# section's total against BINARY, and prints "bytes<TAB>part<TAB>component" lines.
if ! awk -v sections="$WORK/sections" -v modules="$WORK/modules" '
    function hex(s,   i, n) { n = 0; s = tolower(s); for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return n }
    function part_of_module(m,   p) {
        if (m ~ /^(CNIOBoringSSL|CCryptoBoringSSL)/) return "BoringSSL (twice: swift-nio-ssl, swift-crypto)"
        p = (m in pkg) ? pkg[m] : ""
        if (p == "(edged)") return "edged'"'"'s own modules (Sources/)"
        if (p ~ /^swift-nio/) return "SwiftNIO (nio, nio-http2, nio-ssl)"
        if (p ~ /^(swift-crypto|swift-certificates|swift-asn1)$/) return "swift-certificates, swift-asn1, swift-crypto"
        if (p ~ /^(grpc-swift|swift-protobuf)/) return "grpc-swift-2 + swift-protobuf"
        if (p ~ /^(swift-service-lifecycle|swift-async-algorithms)$/) return "service-lifecycle + AsyncAlgorithms"
        if (p ~ /^(swift-argument-parser|swift-log|swift-collections|swift-atomics|swift-system)$/) return "ArgumentParser, log, collections, atomics"
        if (p != "") return "package " p
        return "module " m " (package unknown)"
    }
    function part_of_file(f) {
        if (f ~ /^lib(swift|_swift|dispatch|BlocksRuntime)/ || f ~ /^swiftrt/) return "Swift runtime + stdlib (Core, Concurrency, Dispatch, Regex)"
        if (f ~ /^lib_?Foundation/) return "FoundationEssentials"
        if (f ~ /^libsqlite3/) return "SQLite (libsqlite3.a)"
        if (f ~ /^libsystemd/) return "libsystemd"
        if (f ~ /^lib(c|m|pthread|dl|rt|resolv|c_nonshared|mvec)([-.]|$)/ || f ~ /^(crt1|crti|crtn|Scrt1|rcrt1)\.o$/) return "glibc, libgcc, libstdc++"
        if (f ~ /^lib(gcc|gcc_eh|stdc\+\+|supc\+\+|atomic)\.a$/ || f ~ /^crt(begin|end)/) return "glibc, libgcc, libstdc++"
        if (f ~ /^lib(z|yaml|seccomp)\.a$/) return "zlib, libyaml, libseccomp"
        return "other: " f
    }
    BEGIN {
        while ((getline line < sections) > 0) { split(line, a, " "); want[a[1]] = hex(a[2]); seen[a[1]] = 0 }
        while ((getline line < modules) > 0) { split(line, a, " "); if (!(a[1] in pkg)) pkg[a[1]] = a[2] }
    }
    NR == 1 { next }
    { rest = substr($0, 50) }
    rest ~ /^[^ ]/ { sec = rest; keep = (sec in want); if (keep) { seen[sec] = 1; have[sec] = hex($3) } next }
    !keep || rest !~ /^        [^ ]/ { next }
    {
        f = substr(rest, 9); size = hex($3)
        if (size == 0) next
        sub(/:\([^()]*\)$/, "", f)
        if (f == "<internal>") { part = "linker-made (.eh_frame, GOT, merged strings)"; comp = "<internal>" }
        else if (f ~ /\.build\//) { comp = f; sub(/\.build\/.*/, "", comp); sub(/.*\//, "", comp); part = part_of_module(comp) }
        else { comp = f; sub(/\(.*/, "", comp); sub(/.*\//, "", comp); part = part_of_file(comp) }
        bytes[part "\t" comp] += size
    }
    END {
        bad = 0
        for (s in want) {
            if (!seen[s]) { printf "size guard: section %s of the binary is not in the map\n", s > "/dev/stderr"; bad = 1 }
            else if (have[s] != want[s]) { printf "size guard: section %s: %d bytes in the map, %d in the binary\n", s, have[s], want[s] > "/dev/stderr"; bad = 1 }
        }
        if (bad) exit 3
        for (k in bytes) printf "%d\t%s\n", bytes[k], k
    }' "$MAP" >"$WORK/components"; then
    table_failed "$MAP is not the map of the link that made $BINARY (the sections differ, above)"
fi

# The table: parts by size, each with its largest inputs; the rest of the file is headers and padding.
awk -F '\t' -v size="$SIZE" -v label="$LABEL" '
    function m(b) { return sprintf("%.2f", b / 1048576) }
    function commas(n,   s, r, neg) { s = sprintf("%d", n); neg = ""; if (s ~ /^-/) { neg = "-"; s = substr(s, 2) } r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } return neg s r }
    { part[$2] += $1; total += $1; n[$2]++; comp[$2, n[$2]] = $3; cb[$2, n[$2]] = $1 }
    END {
        rest = size - total
        np = 0
        for (p in part) order[++np] = p
        for (i = 2; i <= np; i++) for (j = i; j > 1 && part[order[j]] > part[order[j - 1]]; j--) { t = order[j]; order[j] = order[j - 1]; order[j - 1] = t }
        printf "size guard: where the %s bytes of %s go (lld link map, file bytes per part):\n", commas(size), label
        printf "  %-60s %12s %8s %6s  %s\n", "part", "bytes", "MiB", "%", "largest inputs (MiB)"
        for (i = 1; i <= np; i++) {
            p = order[i]
            # the three largest inputs of the part
            top = ""
            for (k = 1; k <= 3; k++) {
                best = 0; bi = 0
                for (c = 1; c <= n[p]; c++) if (!((p, c) in used) && cb[p, c] > best) { best = cb[p, c]; bi = c }
                if (bi == 0 || best < 5243) break
                used[p, bi] = 1
                top = top (top == "" ? "" : ", ") comp[p, bi] " " m(best)
            }
            if (n[p] > k - 1) top = top sprintf("%s+%d more", top == "" ? "" : ", ", n[p] - k + 1)
            printf "  %-60s %12s %8s %5.1f%%  %s\n", p, commas(part[p]), m(part[p]), 100 * part[p] / size, top
        }
        printf "  %-60s %12s %8s %5.1f%%  %s\n", "ELF headers, alignment padding", commas(rest), m(rest), 100 * rest / size, "(the file minus the sections above)"
        printf "  %-60s %12s %8s %5.1f%%\n", "total (the stripped file)", commas(size), m(size), 100
    }' "$WORK/components" >&2

if [ "$over" = 1 ]; then
    over_message "the table above"
    exit 1
fi
exit 0
