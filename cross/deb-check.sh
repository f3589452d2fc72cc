#!/bin/bash
# Checks edged .debs made by cross/deb.sh without installing them: control fields, file list, modes and owners,
# ELF machine and static linking, conffiles, maintainer scripts (POSIX sh syntax, set -e, placeholders filled),
# the default config.yaml (edged accepts it, commented and uncommented, and it names every key edged knows),
# binary versions, and lintian. Prints every problem found, then exits 1 if there was one.
#
#   cross/deb-check.sh DEB...            e.g. cross/deb-check.sh cross/out/edged_*_{amd64,arm64}.deb
#   cross/deb-check.sh --self-test DEB   breaks copies of a good DEB in known ways; each must be refused
#
# Running an arm64 edged needs qemu-aarch64-static (qemu-user-static); without it those checks are skipped with a
# note. lintian must be installed (apt-get install lintian).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

problems=0
bad() { echo "deb-check: $deb: $*" >&2; problems=$((problems + 1)); }
note() { echo "deb-check: $deb: $*" >&2; }

# Runs a binary of ELF machine $1 (x86_64, aarch64) here: natively, or under qemu-user-static.
run_arch() {
    local arch=$1; shift
    if [ "$arch" = "$(uname -m)" ]; then "$@"
    elif command -v "qemu-$arch-static" >/dev/null; then "qemu-$arch-static" "$@"
    else return 127
    fi
}

# The setting lines of a config.yaml uncommented: "#key: v" and "#  key: v" (prose is "# text").
uncomment_settings() { sed -E 's/^#([^ #]|  )/\1/' "$1"; }

# Runs `edged --config FILE` as nobody: edged reads and checks the file before it checks that it is root, so an
# accepted file ends in the "must run as root" refusal. Prints edged's output; fails when the file was refused.
config_accepted() {
    local arch=$1 edged=$2 file=$3 output runner=()
    [ "$arch" = "$(uname -m)" ] || runner=("qemu-$arch-static")
    output=$(cd / && setpriv --reuid=65534 --regid=65534 --clear-groups -- "${runner[@]}" "$edged" --config "$file" 2>&1) || true
    echo "$output"
    grep -q "must run as root" <<<"$output"
}

# Runs DEBIAN/<script> ARGS with logging stubs; prints the calls. $1: folder with DEBIAN/, $2: "systemd" or "none"
# (whether /run/systemd/system exists), then the script and its arguments.
run_script_with_stubs() {
    local dir=$1 init=$2; shift 2
    mkdir -p "$dir/stubs" && : >"$dir/calls"
    local s
    for s in deb-systemd-helper deb-systemd-invoke systemctl systemd-tmpfiles; do
        printf '#!/bin/sh\necho "%s $*" >>%q\n[ "$1 $2" != "--quiet was-enabled" ] || exit 0\nexit 0\n' "$s" "$dir/calls" >"$dir/stubs/$s"
        chmod 0755 "$dir/stubs/$s"
    done
    unshare -m --propagation private sh -c '
        set -e
        mount -t tmpfs edged-deb-check /run
        [ "$1" = none ] || mkdir -p /run/systemd/system
        shift
        PATH="$0:/usr/sbin:/usr/bin:/sbin:/bin" sh "$@"' "$dir/stubs" "$init" "$@" || echo "EXIT $?" >>"$dir/calls"
    cat "$dir/calls"
}

check_scripts() {
    local dir=$1 calls d=$1/DEBIAN all edged_units
    all=$(sed -n 's/^all_units="\(.*\)"$/\1/p' "$d/postinst")
    edged_units=$(sed -n 's/^units="\(.*\)"$/\1/p' "$d/postinst")
    expect_call() {  # expect_call ACTION CALLS PATTERN WHY
        grep -qxF -- "$3" <<<"$2" || bad "$1: no \"$3\" ($4); the scripts called: $(tr '\n' ';' <<<"$2")"
    }
    refuse_call() {  # refuse_call ACTION CALLS REGEX WHY
        if grep -qE -- "$3" <<<"$2"; then bad "$1: called \"$(grep -E -- "$3" <<<"$2" | head -n1)\" ($4)"; fi
    }

    calls=$(run_script_with_stubs "$dir" systemd "$d/postinst" configure)
    refuse_call "install" "$calls" "^EXIT" "postinst failed"
    expect_call "install" "$calls" "systemd-tmpfiles --create edged.conf" "edged's directories"
    expect_call "install" "$calls" "deb-systemd-helper enable edged.service" "enable edged"
    expect_call "install" "$calls" "deb-systemd-invoke start $edged_units" "start edged"
    refuse_call "install" "$calls" "enable edged-(tunnel-server|autonomy-controller)" "control-plane services are opt-in"

    calls=$(run_script_with_stubs "$dir" systemd "$d/postinst" configure 0.0.1)
    refuse_call "upgrade" "$calls" "^EXIT" "postinst failed"
    expect_call "upgrade" "$calls" "deb-systemd-invoke restart edged.service" "the new edged must run"
    refuse_call "upgrade" "$calls" " stop | start |restart .*\.socket" "an upgrade restarts edged only: no stop, no socket restart"

    calls=$(run_script_with_stubs "$dir" none "$d/postinst" configure)
    refuse_call "install without systemd" "$calls" "^EXIT" "postinst failed"
    expect_call "install without systemd" "$calls" "deb-systemd-helper enable edged.service" "enabled for the first boot"
    refuse_call "install without systemd" "$calls" "^(systemctl|deb-systemd-invoke) " "nothing to start in a chroot"

    calls=$(run_script_with_stubs "$dir" systemd "$d/prerm" upgrade 0.0.2)
    refuse_call "prerm upgrade" "$calls" "." "an upgrade must not stop edged or its pods"

    calls=$(run_script_with_stubs "$dir" systemd "$d/prerm" remove)
    refuse_call "remove" "$calls" "^EXIT" "prerm failed"
    local u first
    for u in $all; do expect_call "remove" "$calls" "deb-systemd-invoke stop $u" "stop what the package runs"; done
    first=$(grep -m1 'deb-systemd-invoke stop' <<<"$calls" || true)
    case "$all" in *.socket*) [[ "$first" == *.socket ]] || bad "remove: the socket must stop first (else it restarts edged), first was: $first" ;; esac
    refuse_call "remove" "$calls" "kill" "remove stops the daemon only, never pods"

    calls=$(run_script_with_stubs "$dir" systemd "$d/postrm" remove)
    refuse_call "postrm remove" "$calls" "^EXIT" "postrm failed"
    expect_call "postrm remove" "$calls" "deb-systemd-helper mask $all" "keep the units' state for a reinstall"
}

check_deb() {
    deb=$1
    local tmp=$2 name version debarch arch machine
    [ -f "$deb" ] || { bad "no such file"; return; }
    name=$(basename "$deb" .deb)
    IFS=_ read -r _ version debarch <<<"$name"
    case "$debarch" in
        amd64) arch=x86_64 machine="Advanced Micro Devices X86-64" ;;
        arm64) arch=aarch64 machine="AArch64" ;;
        *) bad "file name $name.deb does not end in _amd64.deb or _arm64.deb (cross/deb.sh names them edged_<version>_<arch>.deb)"; return ;;
    esac

    # Control fields.
    if ! dpkg-deb -f "$deb" >"$tmp/control" 2>"$tmp/err"; then bad "dpkg-deb cannot read it: $(cat "$tmp/err")"; return; fi
    field() { sed -n "s/^$1: //p" "$tmp/control"; }
    [ "$(field Package)" = edged ] || bad "Package is \"$(field Package)\", not edged"
    [ "$(field Version)" = "$version" ] || bad "Version is \"$(field Version)\" but the file name says $version"
    [ "$(field Architecture)" = "$debarch" ] || bad "Architecture is \"$(field Architecture)\" but the file name says $debarch"
    [ -n "$(field Maintainer)" ] || bad "no Maintainer field"
    [[ "$(field Installed-Size)" =~ ^[0-9]+$ ]] || bad "Installed-Size \"$(field Installed-Size)\" is not a number of KiB"
    for f in Depends Pre-Depends; do
        [ -z "$(field $f)" ] || bad "$f: $(field $f): the binaries are static and need no other package; remove it in cross/deb.sh"
    done

    # File list: paths, modes, owners.
    dpkg-deb -c "$deb" | awk '{ print $1, $2, $6 }' | sed 's| \./| /|; s|/$||' >"$tmp/list"
    expect() {  # expect MODE PATH
        local got
        got=$(awk -v p="$2" '$3 == p { print $1 " " $2 }' "$tmp/list")
        if [ -z "$got" ]; then bad "$2 is missing (cross/deb.sh installs it)"
        elif [ "$got" != "$1 root/root" ]; then bad "$2 is \"$got\", expected \"$1 root/root\""
        fi
    }
    for p in edged edgectl edged-monitor; do expect -rwxr-xr-x "/usr/bin/$p"; done
    local units=0 u
    for u in "$repo"/systemd/*.service "$repo"/systemd/*.socket; do
        [ -e "$u" ] || continue
        expect -rw-r--r-- "/usr/lib/systemd/system/$(basename "$u")"
        units=$((units + 1))
    done
    [ "$units" -ge 1 ] || bad "no unit files in $repo/systemd to compare with"
    expect -rw-r--r-- /usr/lib/tmpfiles.d/edged.conf
    expect -rw-r--r-- /etc/edged/config.yaml
    expect drwxr-xr-x /etc/edged/manifests
    expect -rw-r--r-- /usr/share/bash-completion/completions/edgectl
    expect -rw-r--r-- /usr/share/zsh/vendor-completions/_edgectl
    expect -rw-r--r-- /usr/share/fish/vendor_completions.d/edgectl.fish
    for p in README.md copyright changelog.gz; do expect -rw-r--r-- "/usr/share/doc/edged/$p"; done
    expect -rw-r--r-- /usr/share/lintian/overrides/edged
    local l
    while read -r l; do bad "$l (dpkg-deb --root-owner-group)"; done < <(awk '$2 != "root/root" { print $3 " is owned by " $2 }' "$tmp/list")
    while read -r l; do bad "$l"; done < <(awk '$1 ~ /^.....w/ || $1 ~ /^........w/ { print $3 " is group or world writable: " $1 }' "$tmp/list")
    while read -r l; do bad "$l"; done < <(awk '$1 ~ /^-/ && $3 !~ /^\/(usr|etc)\// { print $3 " is outside /usr and /etc" }' "$tmp/list")

    # Contents: unit files as in systemd/, binaries for the right machine and static.
    mkdir "$tmp/root"
    dpkg-deb -x "$deb" "$tmp/root"
    for u in "$repo"/systemd/*.service "$repo"/systemd/*.socket "$repo/systemd/edged.tmpfiles.conf"; do
        [ -e "$u" ] || continue
        local dest=$tmp/root/usr/lib/systemd/system/$(basename "$u")
        [ "$(basename "$u")" = edged.tmpfiles.conf ] && dest=$tmp/root/usr/lib/tmpfiles.d/edged.conf
        [ ! -e "$dest" ] || cmp -s "$u" "$dest" || bad "${dest#"$tmp/root"} differs from systemd/$(basename "$u"): rebuild the package"
    done
    [ ! -e "$tmp/root/etc/edged/config.yaml" ] || cmp -s "$here/deb/config.yaml" "$tmp/root/etc/edged/config.yaml" ||
        bad "/etc/edged/config.yaml differs from cross/deb/config.yaml: rebuild the package"
    if [ -n "$(find "$tmp/root/etc/edged/manifests" -mindepth 1 2>/dev/null)" ]; then
        bad "/etc/edged/manifests is not empty: a package must not bring pods along"
    fi
    if command -v readelf >/dev/null; then
        for p in edged edgectl edged-monitor; do
            local b=$tmp/root/usr/bin/$p
            [ -f "$b" ] || continue
            local m
            m=$(readelf -h "$b" 2>/dev/null | sed -n 's/^ *Machine: *//p')
            [ "$m" = "$machine" ] || bad "/usr/bin/$p is built for \"${m:-not an ELF file}\", not $machine ($debarch)"
            if readelf -l "$b" 2>/dev/null | grep -q "INTERP"; then bad "/usr/bin/$p has a program interpreter: it is not static"; fi
            if readelf -d "$b" 2>/dev/null | grep -q "(NEEDED)"; then bad "/usr/bin/$p needs shared libraries: it is not static"; fi
        done
    else
        note "readelf is missing (binutils): ELF machine and static linking not checked"
    fi
    if [ -n "$(zcat "$tmp/root/usr/share/doc/edged/changelog.gz" 2>/dev/null | head -n1 | grep -F "edged ($version)")" ]; then :; else
        bad "/usr/share/doc/edged/changelog.gz does not start with \"edged ($version)\""
    fi
    if head -n1 "$tmp/root/usr/share/bash-completion/completions/edgectl" 2>/dev/null | grep -q '^#!'; then
        bad "the bash completion starts with #! (it is sourced, not run)"
    fi
    if ! grep -q "edgectl" "$tmp/root/usr/share/zsh/vendor-completions/_edgectl" 2>/dev/null; then
        bad "the zsh completion does not mention edgectl: was it generated?"
    fi

    # conffiles and maintainer scripts.
    mkdir "$tmp/DEBIAN"
    dpkg-deb -e "$deb" "$tmp/DEBIAN"
    if [ "$(cat "$tmp/DEBIAN/conffiles" 2>/dev/null)" != /etc/edged/config.yaml ]; then
        bad "DEBIAN/conffiles must list exactly /etc/edged/config.yaml, it has: $(tr '\n' ' ' <"$tmp/DEBIAN/conffiles" 2>/dev/null || echo "no conffiles")"
    fi
    for s in postinst prerm postrm; do
        local f=$tmp/DEBIAN/$s
        if [ ! -f "$f" ]; then bad "DEBIAN/$s is missing (cross/deb/$s)"; continue; fi
        [ -x "$f" ] || bad "DEBIAN/$s is not executable"
        [ "$(head -n1 "$f")" = "#!/bin/sh" ] || bad "DEBIAN/$s does not start with #!/bin/sh"
        grep -q '^set -e$' "$f" || bad "DEBIAN/$s has no \"set -e\" line"
        if ! err=$(sh -n "$f" 2>&1); then bad "DEBIAN/$s: syntax error: $err"; fi
        if command -v dash >/dev/null && ! err=$(dash -n "$f" 2>&1); then bad "DEBIAN/$s: dash syntax error: $err"; fi
        if grep -n '@[A-Z_]*@' "$f" >/dev/null; then bad "DEBIAN/$s still has a placeholder: $(grep -o '@[A-Z_]*@' "$f" | head -n1)"; fi
        if command -v checkbashisms >/dev/null && ! err=$(checkbashisms "$f" 2>&1); then bad "DEBIAN/$s: $err"; fi
    done
    grep -q 'edged.service' "$tmp/DEBIAN/postinst" 2>/dev/null || bad "DEBIAN/postinst does not enable/start edged.service"

    # Versions the binaries report, and the default config as edged reads it.
    local ran=0 reported
    for p in edged edgectl; do
        if reported=$(run_arch "$arch" "$tmp/root/usr/bin/$p" --version 2>/dev/null); then
            ran=1
            [ "$reported" = "$version" ] || bad "/usr/bin/$p reports version \"$reported\", the package is $version"
        fi
    done
    if [ "$ran" = 1 ] && [ -f "$tmp/root/etc/edged/config.yaml" ]; then
        local edged=$tmp/root/usr/bin/edged out
        chmod 0755 "$tmp/root" "$tmp/root/usr" "$tmp/root/usr/bin"
        cp "$tmp/root/etc/edged/config.yaml" "$tmp/as-shipped.yaml"
        uncomment_settings "$tmp/root/etc/edged/config.yaml" >"$tmp/uncommented.yaml"
        printf 'zzzNoSuchKey: 1\n' >"$tmp/unknown.yaml"
        chmod 0644 "$tmp"/*.yaml
        if ! command -v setpriv >/dev/null; then
            note "setpriv (util-linux) is missing: config.yaml not checked with edged"
        else
            out=$(config_accepted "$arch" "$edged" "$tmp/as-shipped.yaml") ||
                bad "edged refuses /etc/edged/config.yaml as shipped: $out"
            out=$(config_accepted "$arch" "$edged" "$tmp/uncommented.yaml") ||
                bad "edged refuses cross/deb/config.yaml with its settings uncommented: $out"
            # The keys edged knows, from its own refusal of an unknown key, must all be documented.
            if out=$(config_accepted "$arch" "$edged" "$tmp/unknown.yaml"); then
                bad "edged accepted an unknown key, so the key list could not be read: $out"
            else
                local known key section
                known=$(sed -n 's/.*(known keys: \(.*\)).*/\1/p' <<<"$out" | tr -d ',')
                [ -n "$known" ] || bad "edged's refusal of an unknown key lists no keys: $out"
                for key in $known; do
                    grep -qE "(^#|\`) *$key:" "$tmp/as-shipped.yaml" ||
                        bad "config.yaml does not document the key $key (cross/deb/config.yaml)"
                    case "$key" in cni|gpu|cluster|hub|kubelet|tunnel) ;; *) continue ;; esac
                    section=$key
                    printf '%s:\n  zzzNoSuchKey: 1\n' "$section" >"$tmp/unknown.yaml"
                    if out=$(config_accepted "$arch" "$edged" "$tmp/unknown.yaml"); then
                        bad "edged accepted $section.zzzNoSuchKey: $out"; continue
                    fi
                    for key in $(sed -n 's/.*(known keys: \(.*\)).*/\1/p' <<<"$out" | tr -d ','); do
                        grep -qE "(^#|\`) *$key:" "$tmp/as-shipped.yaml" ||
                            bad "config.yaml does not document the key $section.$key (cross/deb/config.yaml)"
                    done
                done
            fi
        fi
    elif [ "$ran" = 0 ]; then
        note "cannot run $arch binaries here (install qemu-user-static): versions and config.yaml not checked with edged"
    fi

    # Maintainer scripts run with stub deb-systemd-helper/-invoke, systemctl and systemd-tmpfiles that only log
    # their arguments, in a private mount namespace whose /run is a tmpfs (with or without /run/systemd/system):
    # which units each dpkg action enables, starts, restarts and stops. purge is not run here (it deletes edged's
    # directories); it was checked by hand in a namespace with tmpfs over them.
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -f "$tmp/DEBIAN/postinst" ]; then
        check_scripts "$tmp"
    else
        note "not root (or no unshare): maintainer scripts not run with stubs"
    fi

    # lintian, with the package's own overrides; every warning or error fails.
    if [ "${_DEB_CHECK_NO_LINTIAN:-}" = 1 ]; then
        :  # --self-test: only its lintian case runs lintian (10 s a run)
    elif ! command -v lintian >/dev/null; then
        bad "lintian is missing: apt-get install lintian"
    else
        local lint rc=0
        lint=$(lintian --fail-on error,warning "$deb" 2>&1) || rc=$?
        lint=$(grep -v "running with root privileges is not recommended" <<<"$lint" || true)
        if [ "$rc" != 0 ]; then bad "lintian found errors or warnings (exit $rc): ${lint:-no output}"
        elif [ -n "$lint" ]; then note "lintian: $lint"
        fi
    fi
}

self_test() {
    local good=$1 tmp fails=0
    [ -f "$good" ] || { echo "deb-check: --self-test needs a good .deb, $good is missing" >&2; exit 1; }
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/edged-deb-selftest.XXXXXX")
    selftest_tmp=$tmp
    trap 'rm -rf "$selftest_tmp"' EXIT
    local base
    base=$(basename "$good")
    dpkg-deb -R "$good" "$tmp/good"
    # breaks NAME EXPECTED-MESSAGE COMMAND...: run COMMAND in a copy of the unpacked package, repack it under the
    # good name, and require deb-check to fail with EXPECTED-MESSAGE.
    breaks() {
        local label=$1 expected=$2; shift 2
        rm -rf "$tmp/case" && cp -a "$tmp/good" "$tmp/case" && mkdir -p "$tmp/out-$label"
        (cd "$tmp/case" && "$@")
        dpkg-deb --root-owner-group -Zgzip -z1 --build "$tmp/case" "$tmp/out-$label/$base" >/dev/null
        local out
        local nolint=1
        [ "$label" != lintian-override-gone ] || nolint=0
        if out=$(_DEB_CHECK_NO_LINTIAN=$nolint bash "$0" "$tmp/out-$label/$base" 2>&1); then
            echo "deb-check self-test: $label: accepted, expected a refusal with \"$expected\"" >&2; fails=$((fails + 1))
        elif ! grep -qF -- "$expected" <<<"$out"; then
            echo "deb-check self-test: $label: refused, but without \"$expected\":" >&2; echo "$out" >&2; fails=$((fails + 1))
        else
            echo "deb-check self-test: $label: refused as expected"
        fi
    }
    breaks no-conffile "DEBIAN/conffiles must list exactly /etc/edged/config.yaml" rm DEBIAN/conffiles
    breaks wrong-arch "Architecture is \"i386\"" sed -i 's/^Architecture: .*/Architecture: i386/' DEBIAN/control
    breaks mode "/usr/bin/edgectl is \"-rwxrwxrwx root/root\"" chmod 0777 usr/bin/edgectl
    breaks missing-monitor "/usr/bin/edged-monitor is missing" rm usr/bin/edged-monitor
    breaks syntax "DEBIAN/postinst: syntax error" sed -i 's/^esac$/esca/' DEBIAN/postinst
    breaks no-set-e "DEBIAN/prerm has no \"set -e\" line" sed -i '/^set -e$/d' DEBIAN/prerm
    breaks placeholder "still has a placeholder: @ALL_UNITS@" sed -i 's/^units=.*/units="@ALL_UNITS@"/' DEBIAN/postrm
    breaks unit-differs "differs from systemd/edged.service" sed -i '$a # changed' usr/lib/systemd/system/edged.service
    breaks pod-shipped "/etc/edged/manifests is not empty" touch etc/edged/manifests/pod.yaml
    if [ "$(id -u)" = 0 ]; then
        breaks stops-on-upgrade "prerm upgrade: called \"deb-systemd-invoke stop" sed -i 's/^remove)$/remove|upgrade)/' DEBIAN/prerm
        breaks no-start "install: no \"deb-systemd-invoke start" sed -i 's/deb-systemd-invoke start/true/' DEBIAN/postinst
    fi
    breaks depends "Depends: libc6" sed -i '/^Version:/a Depends: libc6' DEBIAN/control
    breaks lintian-override-gone "lintian found errors or warnings" sed -i '/embedded-library/d' usr/share/lintian/overrides/edged
    if command -v setpriv >/dev/null && run_arch "$(uname -m)" true 2>/dev/null && [[ "$base" == *_amd64.deb || -n "$(command -v qemu-aarch64-static)" ]]; then
        breaks bad-config "edged refuses /etc/edged/config.yaml as shipped" sed -i '1i logLevel: loud' etc/edged/config.yaml
        breaks undocumented-key "does not document the key hub.maxStoreSize" sed -i '/maxStoreSize/d' etc/edged/config.yaml
    fi
    [ "$fails" = 0 ] || { echo "deb-check self-test: $fails case(s) failed" >&2; exit 1; }
    echo "deb-check self-test: all cases refused as expected"
}

if [ "${1:-}" = "--self-test" ]; then
    [ $# -eq 2 ] || { echo "usage: cross/deb-check.sh --self-test DEB" >&2; exit 2; }
    self_test "$2"
    exit 0
fi
[ $# -ge 1 ] || { echo "usage: cross/deb-check.sh DEB... | --self-test DEB" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/edged-deb-check.XXXXXX")
chmod 0755 "$work"  # edged reads the config copies in it as nobody
trap 'rm -rf "$work"' EXIT
n=0
for d in "$@"; do
    n=$((n + 1)); mkdir -m 0755 "$work/$n"
    check_deb "$d" "$work/$n"
    rm -rf "$work/$n"
done
deb=all
if [ "$problems" -gt 0 ]; then
    echo "deb-check: $problems problem(s) found, see above" >&2
    exit 1
fi
echo "deb-check: $* ok"
