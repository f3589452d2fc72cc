#!/bin/sh
# Runs in the gateway VM after a hard power-off (cross/gateway-vm.sh step 6): every file edged keeps in its state
# directory must open clean. Prints one line per problem ("BAD <file>: <why>") and a summary; exits 1 on any.
#   SQLite databases (any file starting with "SQLite format 3"): PRAGMA integrity_check says ok
#   *.json: parses (sqlite3's json_valid over readfile)
#   image blobs (images/blobs/sha256/<hex>): their sha256 is their name
#   the containers' record files (containers/<id>/{state,exit}: KEY=VALUE lines; config: NUL-terminated records)
#   everything else: readable
# Unpacked image layers (images/layers) and containers' writable layers are file trees of the images, not edged's
# records: skipped. Needs sqlite3 and sha256sum (coreutils) in the guest.
state=${1:-/var/lib/edged}
bad=0 files=0 dbs=0 jsons=0 blobs=0 records=0
report() { echo "BAD $1: $2"; bad=$((bad + 1)); }

list=$(mktemp)
find "$state" \( -path "$state/images/layers" -o -path "$state/images/tmp" -o -name upper -o -name work -o -name rootfs \) -prune \
    -o -type f -print >"$list"
while IFS= read -r f; do
    files=$((files + 1))
    if ! head -c 1 "$f" >/dev/null 2>&1; then report "$f" "cannot be read"; continue; fi
    if [ "$(head -c 15 "$f")" = "SQLite format 3" ]; then
        dbs=$((dbs + 1))
        r=$(sqlite3 -readonly "$f" 'PRAGMA integrity_check;' 2>&1)
        [ "$r" = ok ] || report "$f" "sqlite integrity_check: $r"
        continue
    fi
    case "$f" in
        *.json)
            jsons=$((jsons + 1))
            r=$(sqlite3 :memory: "SELECT json_valid(CAST(readfile('$f') AS TEXT));" 2>&1)
            [ "$r" = 1 ] || report "$f" "not valid JSON ($r; $(head -c 80 "$f" | tr '\n' ' '))" ;;
        "$state"/images/blobs/sha256/*)
            blobs=$((blobs + 1))
            sum=$(sha256sum "$f" | cut -d' ' -f1)
            [ "$sum" = "$(basename "$f")" ] || report "$f" "sha256 is $sum" ;;
        "$state"/containers/*/state | "$state"/containers/*/exit)
            records=$((records + 1))
            if [ ! -s "$f" ]; then report "$f" "empty"
            elif grep -qv '=' "$f"; then report "$f" "a line without KEY=VALUE: $(grep -v '=' "$f" | head -1)"
            fi ;;
        "$state"/containers/*/config)
            # NUL-terminated KEY=VALUE records (Sources/EdgedRuntime/MonitorConfig.swift).
            records=$((records + 1))
            if [ ! -s "$f" ]; then report "$f" "empty"
            elif [ "$(tail -c 1 "$f" | od -An -tx1 | tr -d ' \n')" != 00 ]; then report "$f" "last record not NUL-terminated"
            elif ! tr '\0' '\n' <"$f" | head -1 | grep -q '^[a-zA-Z]*='; then report "$f" "first record is not KEY=VALUE"
            fi ;;
    esac
done <"$list"
rm -f "$list"
echo "state check of $state: $files files ($dbs SQLite, $jsons JSON, $blobs blobs, $records container records), $bad bad"
[ "$bad" -eq 0 ]
