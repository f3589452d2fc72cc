#!/bin/bash
# Packs the static binaries of cross/build.sh into Debian packages, with dpkg-deb alone (no debhelper):
#   cross/out/<arch>/{edged,edgectl,edged-monitor} → cross/out/edged_<version>_<debarch>.deb
# (aarch64 → arm64, x86_64 → amd64), then checks each one with cross/deb-check.sh (contents, modes, conffiles,
# maintainer scripts, lintian).
#
#   cross/deb.sh [--version V] [--no-check] [ARCH...]     ARCH: aarch64, x86_64 (default: those in cross/out)
#
# The version is --version, else $EDGED_VERSION, else the one the binaries report (cross/build.sh stamps
# VERSION+git<commit date>.<hash>, or $EDGED_VERSION, into them: cross/stamp-version.sh). deb.sh asks each edged
# and edgectl (natively, or under qemu-aarch64-static) and refuses a package whose binaries say otherwise.
# Build a bumped pair:  EDGED_VERSION=0.1.0+vmtest2 cross/build.sh release && EDGED_VERSION=0.1.0+vmtest2 cross/deb.sh
#
# Package contents: /usr/bin/{edged,edgectl,edged-monitor} (edged runs edged-monitor from its own folder), every
# systemd/*.service and *.socket in /usr/lib/systemd/system, systemd/edged.tmpfiles.conf as
# /usr/lib/tmpfiles.d/edged.conf, cross/deb/config.yaml as the conffile /etc/edged/config.yaml, an empty
# /etc/edged/manifests, edgectl's bash/zsh/fish completions, /usr/share/doc/edged/{README.md,copyright,
# changelog.gz}, cross/deb/edged.lintian-overrides, and the maintainer scripts cross/deb/{postinst,prerm,postrm}.
# Needs: dpkg-deb, gzip, git (for the default version and the changelog date); root is not needed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${EDGED_CROSS_OUT:-$here/out}  # where cross/build.sh left <arch>/ (and where the .debs go)

die() { echo "deb.sh: $*" >&2; exit 1; }
log() { echo "deb.sh: $*" >&2; }

version=${EDGED_VERSION:-}
check=1
archs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --version) [ $# -ge 2 ] || die "--version needs a value, e.g. --version 0.1.0+vmtest2"; version=$2; shift 2 ;;
        --version=*) version=${1#--version=}; shift ;;
        --no-check) check=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        aarch64|x86_64) archs+=("$1"); shift ;;
        *) die "unknown argument \"$1\": usage: cross/deb.sh [--version V] [--no-check] [aarch64] [x86_64]" ;;
    esac
done
if [ ${#archs[@]} -eq 0 ]; then
    for a in aarch64 x86_64; do [ -d "$out/$a" ] && archs+=("$a"); done
    [ ${#archs[@]} -gt 0 ] || die "no binaries in $out/aarch64 or $out/x86_64: run cross/build.sh release first"
fi
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing: apt-get install dpkg"

debarch_of() { case "$1" in aarch64) echo arm64 ;; x86_64) echo amd64 ;; esac; }

# Runs a binary of architecture $1 on this machine, if it can: natively, or under qemu-user-static.
run_arch() {
    local arch=$1; shift
    if [ "$arch" = "$(uname -m)" ]; then "$@"
    elif command -v "qemu-$arch-static" >/dev/null; then "qemu-$arch-static" "$@"
    else return 127
    fi
}

# An edgectl this machine runs, for the completion scripts (the same for every architecture).
host_edgectl() {
    local a
    for a in "$(uname -m)" "${archs[@]}"; do
        if [ -x "$out/$a/edgectl" ] && run_arch "$a" "$out/$a/edgectl" --version >/dev/null 2>&1; then
            echo "$a"; return 0
        fi
    done
    return 1
}

# The binaries must be the ones built for $version: each reports its own.
check_binaries() {
    local arch=$1 dir=$out/$1 p reported
    for p in edged edgectl edged-monitor; do
        [ -f "$dir/$p" ] || die "$dir/$p is missing: run cross/build.sh release (it builds all three)"
        [ -x "$dir/$p" ] || die "$dir/$p is not executable"
    done
    for p in edged edgectl; do
        if reported=$(run_arch "$arch" "$dir/$p" --version 2>/dev/null); then
            [ "$reported" = "$version" ] || die "$dir/$p reports version $reported, not $version: build with" \
                "EDGED_VERSION=$version cross/build.sh release, or package it as what it is: cross/deb.sh --version $reported"
        else
            # Cannot run it here (no qemu-user-static): the stamped string must at least be in the binary.
            grep -qaF "$version" "$dir/$p" || die "$dir/$p does not contain the version string $version: build with" \
                "EDGED_VERSION=$version cross/build.sh release (or install qemu-user-static so deb.sh can ask the binary)"
        fi
    done
}

# Commit date and identity for the changelog (reproducible: no wall clock).
if git -C "$repo" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    commit=$(git -C "$repo" rev-parse --short=7 HEAD)
    epoch=$(git -C "$repo" log -1 --format=%ct HEAD)
    default_maintainer=$(git -C "$repo" log -1 --format='%an <%ae>' HEAD)
else
    commit=unknown epoch=$(date +%s) default_maintainer=
fi
maintainer=${EDGED_DEB_MAINTAINER:-${default_maintainer:-edged maintainers <edged@localhost>}}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$epoch}

# Units: every .service and .socket in systemd/. edged's own (edged.socket before edged.service) are enabled and
# started; all are stopped on remove and restarted on upgrade where they run (see cross/deb/postinst).
mapfile -t unit_files < <(cd "$repo/systemd" && ls -1 -- *.service *.socket 2>/dev/null | sort)
[ -f "$repo/systemd/edged.service" ] || die "$repo/systemd/edged.service is missing"
all_units=$(printf '%s\n' "${unit_files[@]}" | sort -t. -k2,2r -k1,1 | tr '\n' ' ' | sed 's/ $//')  # sockets first
edged_units=edged.service
[ -f "$repo/systemd/edged.socket" ] && edged_units="edged.socket edged.service"

stage=$(mktemp -d "${TMPDIR:-/tmp}/edged-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# No version named: the one the binaries report (all the same), else what a build of this commit is stamped with.
if [ -z "$version" ]; then
    for arch in "${archs[@]}"; do
        if [ -x "$out/$arch/edgectl" ] && v=$(run_arch "$arch" "$out/$arch/edgectl" --version 2>/dev/null); then
            [ -z "$version" ] || [ "$v" = "$version" ] || die "the binaries disagree: $out/$arch/edgectl is $v, another" \
                "architecture's is $version: rebuild both with one cross/build.sh run (or package one: cross/deb.sh $arch)"
            version=$v
        fi
    done
    [ -n "$version" ] || version=$(bash "$here/stamp-version.sh" --print)
fi
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] ||
    die "version \"$version\" is not a Debian version: it must start with a digit and use only A-Z a-z 0-9 . + ~ -"
for arch in "${archs[@]}"; do check_binaries "$arch"; done
completion_arch=$(host_edgectl) ||
    die "cannot run any edgectl in $out on this $(uname -m) machine for the shell completions: build x86_64 too, or install qemu-user-static"

failed=()
for arch in "${archs[@]}"; do
    debarch=$(debarch_of "$arch")
    root=$stage/$debarch
    rm -rf "$root"
    install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/usr/lib/tmpfiles.d" \
        "$root/etc/edged/manifests" "$root/usr/share/doc/edged" "$root/usr/share/lintian/overrides" \
        "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
        "$root/usr/share/fish/vendor_completions.d"
    for p in edged edgectl edged-monitor; do install -m 0755 "$out/$arch/$p" "$root/usr/bin/$p"; done
    for u in "${unit_files[@]}"; do install -m 0644 "$repo/systemd/$u" "$root/usr/lib/systemd/system/$u"; done
    install -m 0644 "$repo/systemd/edged.tmpfiles.conf" "$root/usr/lib/tmpfiles.d/edged.conf"
    install -m 0644 "$here/deb/config.yaml" "$root/etc/edged/config.yaml"
    e="$out/$completion_arch/edgectl"
    # bash-completion sources the file: no #! line (lintian: bash-completion-with-hashbang).
    run_arch "$completion_arch" "$e" --generate-completion-script bash | sed '1{/^#!/d}' \
        >"$root/usr/share/bash-completion/completions/edgectl"
    run_arch "$completion_arch" "$e" --generate-completion-script zsh >"$root/usr/share/zsh/vendor-completions/_edgectl"
    run_arch "$completion_arch" "$e" --generate-completion-script fish >"$root/usr/share/fish/vendor_completions.d/edgectl.fish"
    chmod 0644 "$root"/usr/share/*/completions/edgectl "$root"/usr/share/zsh/vendor-completions/_edgectl \
        "$root"/usr/share/fish/vendor_completions.d/edgectl.fish
    install -m 0644 "$repo/README.md" "$root/usr/share/doc/edged/README.md"
    install -m 0644 "$here/deb/copyright" "$root/usr/share/doc/edged/copyright"
    {
        printf 'edged (%s) unstable; urgency=medium\n\n' "$version"
        printf '  * Built from commit %s of the edged repository (cross/deb.sh).\n\n' "$commit"
        printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
    } | gzip -9n >"$root/usr/share/doc/edged/changelog.gz"
    chmod 0644 "$root/usr/share/doc/edged/changelog.gz"
    install -m 0644 "$here/deb/edged.lintian-overrides" "$root/usr/share/lintian/overrides/edged"

    for s in postinst prerm postrm; do
        sed -e "s/@EDGED_UNITS@/$edged_units/g" -e "s/@ALL_UNITS@/$all_units/g" "$here/deb/$s" >"$root/DEBIAN/$s"
        chmod 0755 "$root/DEBIAN/$s"
    done
    echo /etc/edged/config.yaml >"$root/DEBIAN/conffiles"
    chmod 0644 "$root/DEBIAN/conffiles"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    cat >"$root/DEBIAN/control" <<EOF
Package: edged
Version: $version
Architecture: $debarch
Maintainer: $maintainer
Installed-Size: $size
Suggests: containernetworking-plugins
Section: admin
Priority: optional
Description: Kubernetes edge node agent replacing kubelet, containerd and YurtHub
 edged turns a small arm64 or x86_64 Linux gateway into a Kubernetes edge node.
 One daemon replaces kubelet, containerd with its shims, YurtHub and a tunnel
 agent: it runs static pods from /etc/edged/manifests standalone, or joins a
 cluster with "edgectl join", keeps pods running across restarts, upgrades and
 cloud outages, and lets kubectl logs/exec reach the node from behind NAT.
 .
 The binaries are fully static. edgectl is the command a field technician uses
 on site ("sudo edgectl status").
EOF
    chmod 0644 "$root/DEBIAN/control"
    deb=$out/edged_${version}_${debarch}.deb
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb.tmp" >/dev/null
    mv "$deb.tmp" "$deb"
    log "built $deb ($(du -h "$deb" | cut -f1))"
    if [ "$check" = 1 ] && ! bash "$here/deb-check.sh" "$deb"; then failed+=("$deb"); fi
done
if [ ${#failed[@]} -gt 0 ]; then die "cross/deb-check.sh refused ${failed[*]} (see above)"; fi
