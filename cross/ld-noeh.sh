#!/usr/bin/env bash
# ld.lld without the unwind tables of Swift code: the linker cross/build.sh gives swiftc (-ld-path) for the
# shipped static binaries. It links copies of the inputs without .eh_frame, through lld's --remap-inputs:
#   - every object SwiftPM built (*.build/*.o: our modules, the packages, BoringSSL, ...);
#   - the static Swift libraries in $NOEH_SWIFT_STATIC except libswift_Concurrency.a.
# The C runtime keeps its tables: libc, libgcc(_eh), libstdc++, libdispatch, libswift_Concurrency, crt*.o.
# Why that is enough (cross/README.md, "Unwind tables"): Swift code never unwinds. The one unwind in a normal
# run is glibc's pthread_exit of the main thread in dispatch_main (Swift's async main): _Unwind_ForcedUnwind
# needs the unwinder's own frames described, and when it reaches a frame with no table it reports the end of
# the stack, where glibc's stop function longjmps to __libc_start_call_main as intended. A C++ exception in
# BoringSSL (none is caught anywhere) aborts the process either way.
# build.sh writes NOEH_REAL (the real ld.lld), NOEH_OBJCOPY, NOEH_STORE (cache of stripped copies) and
# NOEH_SWIFT_STATIC above this line.
set -euo pipefail
: "${NOEH_REAL:?}" "${NOEH_OBJCOPY:?}" "${NOEH_STORE:?}" "${NOEH_SWIFT_STATIC:?}"

# Copies $1 to $2 without .eh_frame unless $2 is already newer; atomic, so parallel links may share the store.
strip_eh() {
    local src=$1 dst=$2
    [ "$dst" -nt "$src" ] && return 0
    mkdir -p "${dst%/*}"
    "$NOEH_OBJCOPY" --remove-section=.eh_frame "$src" "$dst.$$" && mv -f "$dst.$$" "$dst"
}
export -f strip_eh
export NOEH_OBJCOPY

# The inputs clang passes, directly or in its response files (one or more "quoted" arguments per line).
objects() {
    local a
    for a in "$@"; do
        case "$a" in
            @*) grep -oE '"[^"]*\.build/[^"]*\.o"' "${a#@}" | tr -d '"' || true ;;
            *.build/*.o) printf '%s\n' "$a" ;;
        esac
    done
}

remap=$(mktemp "${TMPDIR:-/tmp}/ld-noeh.XXXXXX")
trap 'rm -f "$remap" "$remap.file"' EXIT
objects "$@" | sort -u | while IFS= read -r o; do
    printf '%s\t%s\n' "$o" "$NOEH_STORE/obj$o"
done >"$remap"
for lib in "$NOEH_SWIFT_STATIC"/lib*.a; do
    case "${lib##*/}" in libswift_Concurrency.a) continue ;; esac
    printf '%s\t%s\n' "$lib" "$NOEH_STORE/lib$lib"
done >>"$remap"
# Strip in parallel; an input that fails keeps its tables (its remap line is left out).
tr '\t' '\n' <"$remap" | xargs -r -d '\n' -n 2 -P "$(nproc)" bash -c 'strip_eh "$0" "$1" || true'
# lld's remap file takes "from-glob=to" lines: escape the glob characters of the paths.
while IFS=$'\t' read -r src dst; do
    [ -f "$dst" ] && printf '%s=%s\n' "$(printf '%s' "$src" | sed 's/[][*?\\]/\\&/g')" "$dst"
done <"$remap" >"$remap.file"
"$NOEH_REAL" --remap-inputs-file="$remap.file" "$@"
