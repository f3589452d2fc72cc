#!/bin/bash
# Writes edged's version into a source tree: VERSION, Sources/EdgedDaemon/Version.swift (edged) and
# Sources/edgectl/Version.swift (edgectl). Both Swift files live in leaf modules, so a re-stamped build recompiles
# only EdgedDaemon and edgectl.
#
#   cross/stamp-version.sh TREE [VERSION]   stamp TREE (a build's copy of the clone; the clone itself only when
#                                          bumping the release: cross/stamp-version.sh . 0.2.0, then commit)
#   cross/stamp-version.sh --print          print the version a build of this clone gets, stamp nothing
#
# VERSION defaults to $EDGED_VERSION, else to the committed VERSION plus "+git<commit date, UTC>.<short hash>"
# (e.g. 0.1.0+git20261206222500.88a9d02), which Debian sorts higher for every later commit; without git (a tarball)
# the plain VERSION. Allowed characters are Debian's upstream-version ones: digits first, then [A-Za-z0-9.+~-].
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

die() { echo "stamp-version.sh: $*" >&2; exit 1; }

# The version a build of $repo gets when nobody names one.
computed_version() {
    local base stamp hash
    [ -r "$repo/VERSION" ] || die "$repo/VERSION is missing: it holds the release version (e.g. 0.1.0)"
    base=$(tr -d ' \t\n' < "$repo/VERSION")
    if git -C "$repo" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        stamp=$(TZ=UTC git -C "$repo" log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
        hash=$(git -C "$repo" rev-parse --short=7 HEAD)
        echo "$base+git$stamp.$hash"
    else
        echo "$base"
    fi
}

version_of() {
    if [ -n "${1:-}" ]; then echo "$1"
    elif [ -n "${EDGED_VERSION:-}" ]; then echo "$EDGED_VERSION"
    else computed_version
    fi
}

check_version() {
    [[ "$1" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] ||
        die "version \"$1\" is not a Debian upstream version: it must start with a digit and use only A-Z a-z 0-9 . + ~ -"
}

if [ "${1:-}" = "--print" ]; then
    [ $# -eq 1 ] || die "usage: cross/stamp-version.sh --print"
    v=$(version_of ""); check_version "$v"; echo "$v"; exit 0
fi
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: cross/stamp-version.sh TREE [VERSION] | --print"
tree=$1
v=$(version_of "${2:-}")
check_version "$v"
for f in VERSION Sources/EdgedDaemon/Version.swift Sources/edgectl/Version.swift; do
    [ -f "$tree/$f" ] || die "$tree/$f is missing: is $tree a copy of the edged source tree?"
done

# Rewrites the one quoted literal on the line that starts with $2 (the constant's declaration) in file $1; fails
# when the line is not there exactly once, so a renamed constant cannot be skipped silently. Only touches the
# file when the text changes (SwiftPM rebuilds on a newer mtime).
stamp_literal() {
    local file=$1 prefix=$2 n new
    n=$(grep -c "^[[:space:]]*$prefix\"[^\"]*\"\$" "$file" || true)
    [ "$n" = 1 ] || die "$file: expected one line \`$prefix\"…\"\`, found $n: update cross/stamp-version.sh with the constant"
    new=$(sed "s|^\([[:space:]]*$prefix\)\"[^\"]*\"\$|\1\"$v\"|" "$file")
    if [ "$new" != "$(cat "$file")" ]; then printf '%s\n' "$new" > "$file"; fi
}
stamp_literal "$tree/Sources/EdgedDaemon/Version.swift" 'public static let string = '
stamp_literal "$tree/Sources/edgectl/Version.swift" 'let edgectlVersion = '
if [ "$(cat "$tree/VERSION")" != "$v" ]; then printf '%s\n' "$v" > "$tree/VERSION"; fi
echo "stamped version $v into $tree"
