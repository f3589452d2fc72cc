#!/usr/bin/env bash
# Builds fully static, stripped edged binaries for the gateways (aarch64) and for x86_64, and packs each
# architecture with the systemd units and the INSTALL note into a tarball under cross/out/.
#
#   cross/build.sh [debug|release]          (default release; needs root: debootstrap, chroot, mount)
#
# Both architectures build in a minbase Debian sid chroot with sid's swiftlang (6.2.x), because both link
# libsystemd statically and only sid's libsystemd-dev ships libsystemd.a (bookworm's, the host's, does not):
# aarch64: cross, against a dedicated aarch64 sysroot + Swift SDK bundle made from sid's arm64 packages.
# x86_64: natively in the chroot, with sid's amd64 development packages, -static-executable and the static stdlib.
#
# Everything downloaded or built is cached outside the clone, in $EDGED_CROSS_CACHE (default
# /var/cache/edged-cross): the chroot is keyed by this script's recipe, the SDK bundle by the exact versions of
# the packages it is made of, and the SwiftPM build folders by architecture and configuration. A second run
# only rebuilds what changed. Delete the cache folder to start from nothing.
#
# Environment: EDGED_CROSS_CACHE, EDGED_CROSS_JOBS (default: number of cores),
#   EDGED_CROSS_ARCHS (default "aarch64 x86_64"), EDGED_CROSS_MIRROR (default: the host's Debian mirror),
#   EDGED_CROSS_PRODUCTS, EDGED_CROSS_EXTRA_FLAGS, EDGED_CROSS_UNWIND_TABLES=keep (see cross/README.md),
#   EDGED_SIZE_LIMIT_BYTES (the aarch64 edged's size budget, default 31457280 = 30 MiB: cross/size-guard.sh).
set -euo pipefail

CONFIG=${1:-release}
case "$CONFIG" in debug|release) ;; *) echo "usage: $0 [debug|release]" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGED_CROSS_CACHE:-/var/cache/edged-cross}
JOBS=${EDGED_CROSS_JOBS:-$(nproc)}
ARCHS=${EDGED_CROSS_ARCHS:-aarch64 x86_64}
OUT=$ROOT/cross/out
read -r -a PRODUCTS <<<"${EDGED_CROSS_PRODUCTS:-edged edgectl edged-monitor}"
# The version every binary of this run reports (EDGED_VERSION, else VERSION+git<commit date>.<hash>).
BUILD_VERSION=$(bash "$ROOT/cross/stamp-version.sh" --print)
# Extra swift build flags for size experiments (e.g. "-Xswiftc -Osize"); they get a build folder of their own.
EXTRA_FLAGS=${EDGED_CROSS_EXTRA_FLAGS:-}
# The shipped binaries are optimised for size (cross/README.md, "Size"): -Osize, and a linker that leaves out
# the unwind tables of Swift code (cross/ld-noeh.sh); EDGED_CROSS_UNWIND_TABLES=keep links them in.
SIZE_FLAGS=()
[ "$CONFIG" = release ] && SIZE_FLAGS=(-Xswiftc -Osize)
UNWIND_TABLES=${EDGED_CROSS_UNWIND_TABLES:-drop}
case "$UNWIND_TABLES" in drop|keep) ;; *) echo "EDGED_CROSS_UNWIND_TABLES must be drop or keep" >&2; exit 2 ;; esac
SCRATCH_SUFFIX=${EXTRA_FLAGS:+-$(printf '%s' "$EXTRA_FLAGS" | sha256sum | cut -c1-8)}

# Bump when the chroot recipe below changes; the chroot's cache key is derived from it and the package list.
CHROOT_RECIPE=1
CHROOT_PACKAGES="swiftlang libc6-dev pkgconf git rsync ca-certificates"
# arm64 development packages the sysroot is made of (gcc's major version is appended at run time).
ARM64_DEV_PACKAGES="libc6-dev libyaml-dev libseccomp-dev zlib1g-dev libsqlite3-dev"
# Installed on top of the cached chroot (its own stamp, so adding one does not mean a new debootstrap), for both
# architectures: amd64 for the native x86_64 build, arm64 for the sysroot.
CHROOT_LAYER_PACKAGES="libsystemd-dev libyaml-dev libseccomp-dev zlib1g-dev libsqlite3-dev"
SDK_RECIPE=4
SDK_ID=edged-aarch64

log() { printf '[cross %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"

# The Debian mirror this machine is configured with (deb822 or one-line sources), else the default one.
debian_mirror() {
    if [ -n "${EDGED_CROSS_MIRROR:-}" ]; then echo "$EDGED_CROSS_MIRROR"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v flock >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing host packages: ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

short_hash() { sha256sum | cut -c1-12; }

# Runs a command inside the chroot, in a private mount namespace, so its mounts vanish when it exits.
# The host's git url redirections (a local package mirror) are bind-mounted read-only at the same paths,
# and the clone at /host-src read-only.
in_chroot() {
    local chroot=$1; shift
    local binds=""
    local dir
    for dir in $(git config --system --get-regexp '^url\..*\.insteadof$' 2>/dev/null \
        | sed -E 's/^url\.(.*)\.insteadof .*/\1/I' | sort -u); do
        [ -d "$dir" ] && binds+="mkdir -p '$chroot$dir' && mount --bind '$dir' '$chroot$dir' && mount -o remount,bind,ro '$chroot$dir' && "
    done
    unshare --mount --propagation private -- bash -c "
        set -e
        mount -t proc proc '$chroot/proc'
        mount --rbind /dev '$chroot/dev'
        mkdir -p '$chroot/host-src' && mount --bind '$ROOT' '$chroot/host-src' && mount -o remount,bind,ro '$chroot/host-src'
        $binds true
        exec chroot '$chroot' /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
            LANG=C.UTF-8 \"\$@\"" in_chroot "$@"
}

# A minbase sid chroot with sid's swiftlang and the arm64 development packages (multiarch).
ensure_chroot() {
    local key
    key=$(echo "$CHROOT_RECIPE $CHROOT_PACKAGES $ARM64_DEV_PACKAGES" | short_hash)
    CHROOT=$CACHE/chroot-sid-$key
    if [ -f "$CHROOT/.edged-ready" ]; then
        log "chroot: cached ($CHROOT)"
        return
    fi
    local mirror partial=$CHROOT.partial
    mirror=$(debian_mirror)
    log "chroot: debootstrap sid from $mirror into $partial"
    rm -rf "$partial"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        sid "$partial" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    # sid's Release files are only valid for a week; a machine whose clock is past that must still work.
    echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99edged-cross"
    echo 'APT::Install-Recommends "false";' >>"$partial/etc/apt/apt.conf.d/99edged-cross"
    in_chroot "$partial" dpkg --add-architecture arm64
    in_chroot "$partial" apt-get update -q >/dev/null
    log "chroot: installing $CHROOT_PACKAGES"
    in_chroot "$partial" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $CHROOT_PACKAGES >/dev/null
    local gcc_major arm64=()
    gcc_major=$(in_chroot "$partial" gcc -dumpversion | cut -d. -f1)
    local p
    for p in $ARM64_DEV_PACKAGES "libstdc++-$gcc_major-dev" "libgcc-$gcc_major-dev"; do arm64+=("$p:arm64"); done
    log "chroot: installing ${arm64[*]}"
    in_chroot "$partial" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${arm64[@]}" >/dev/null
    in_chroot "$partial" apt-get clean
    # SwiftPM resolves through the same git url redirections as the host (the local package mirror).
    git config --system --get-regexp '^url\..*\.insteadof$' | while read -r k v; do
        in_chroot "$partial" git config --system --add "$k" "$v"
    done
    in_chroot "$partial" git config --system --add safe.directory '*'
    touch "$partial/.edged-ready"
    rm -rf "$CHROOT"
    mv "$partial" "$CHROOT"
    log "chroot: ready"
}

# The packages of CHROOT_LAYER_PACKAGES, amd64 and arm64, installed once per list (stamped in the chroot).
ensure_chroot_layer() {
    local key stamp p pkgs=()
    key=$(echo "$CHROOT_LAYER_PACKAGES libstdc++-dev:amd64" | short_hash)
    stamp=$CHROOT/.edged-layer-$key
    if [ -f "$stamp" ]; then
        log "chroot: packages $CHROOT_LAYER_PACKAGES (amd64, arm64): installed"
        return
    fi
    # The native x86_64 build compiles C++ (BoringSSL) too: amd64 libstdc++/libgcc of sid's gcc.
    local gcc_major
    gcc_major=$(in_chroot "$CHROOT" gcc -dumpversion | cut -d. -f1)
    for p in $CHROOT_LAYER_PACKAGES; do pkgs+=("$p:amd64" "$p:arm64"); done
    pkgs+=("libstdc++-$gcc_major-dev:amd64" "libgcc-$gcc_major-dev:amd64")
    log "chroot: installing ${pkgs[*]}"
    in_chroot "$CHROOT" apt-get update -q >/dev/null
    in_chroot "$CHROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
    in_chroot "$CHROOT" apt-get clean
    [ -f "$CHROOT/usr/lib/x86_64-linux-gnu/libsystemd.a" ] && [ -f "$CHROOT/usr/lib/aarch64-linux-gnu/libsystemd.a" ] \
        || die "chroot: sid's libsystemd-dev has no libsystemd.a (amd64 or arm64): the static build cannot link libsystemd"
    touch "$stamp"
}

# The aarch64 sysroot + Swift SDK bundle, keyed by the versions of every package it is made of.
ensure_sdk() {
    local versions key
    versions=$(in_chroot "$CHROOT" dpkg-query -W -f '${Package}:${Architecture}=${Version}\n' \
        | grep -E ':arm64=|^linux-libc-dev:|^swiftlang:' | sort)
    key=$(printf '%s\n%s\n' "$SDK_RECIPE" "$versions" | short_hash)
    SDK_BUNDLE=/work/sdks/$SDK_ID-$key.artifactbundle
    local host_bundle=$CHROOT$SDK_BUNDLE
    if [ -f "$host_bundle/.edged-ready" ]; then
        log "sdk: cached ($host_bundle)"
        return
    fi
    log "sdk: building $host_bundle"
    rm -rf "$CHROOT/work/sdks"
    local variant=$host_bundle/$SDK_ID/aarch64-unknown-linux-gnu
    local sysroot=$variant/sysroot
    mkdir -p "$sysroot"

    # 1. Every file of the installed arm64 packages, plus the kernel headers (asm/* symlink into
    #    usr/lib/linux/uapi/arm64, so that folder comes along).
    in_chroot "$CHROOT" bash -c '
        set -e
        pkgs=$(dpkg-query -W -f "\${Package}:\${Architecture}\n" | grep ":arm64$")
        { dpkg -L $pkgs
          dpkg -L linux-libc-dev | grep -vE "^/usr/include/[^/]+-linux-[^/]+/|^/usr/lib/linux/uapi/"
          dpkg -L linux-libc-dev | grep -E "^/usr/include/aarch64-linux-gnu/|^/usr/lib/linux/uapi/arm64/"; } \
            | sort -u | while read -r f; do if [ -L "$f" ] || [ -f "$f" ]; then printf "%s\n" "${f#/}"; fi; done \
            | tar -C / --no-recursion -cf - -T - | tar -C "$1" -xf -' sh "$SDK_BUNDLE/$SDK_ID/aarch64-unknown-linux-gnu/sysroot"

    # 2. The aarch64 Swift resources (runtime, static stdlib, clang resource dir) from sid's arm64 swiftlang
    #    packages: libswiftlang:amd64 conflicts with libswiftlang:arm64, so they are unpacked, not installed.
    #    swift-driver looks for swiftrt.o under <sdk>/usr/lib/swift{,_static}, so they go there.
    local swift_version
    swift_version=$(in_chroot "$CHROOT" dpkg-query -W -f '${Version}' swiftlang)
    local debs=$CACHE/debs/swiftlang-$swift_version-arm64
    if [ ! -f "$debs/.edged-ready" ]; then
        log "sdk: downloading swiftlang:arm64 $swift_version"
        rm -rf "$debs" && mkdir -p "$debs"
        in_chroot "$CHROOT" bash -c 'mkdir -p /tmp/debs && chown _apt /tmp/debs && cd /tmp/debs && rm -f *.deb &&
            apt-get download -q "swiftlang:arm64=$1" "libswiftlang:arm64=$1" >/dev/null' sh "$swift_version"
        mv "$CHROOT"/tmp/debs/*.deb "$debs/"
        touch "$debs/.edged-ready"
    fi
    local deb dir
    for deb in "$debs"/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -C "$sysroot" -xf - --wildcards \
            './usr/libexec/swift/lib/swift/*' './usr/libexec/swift/lib/swift_static/*' './usr/libexec/swift/lib/clang/*' \
            2>/dev/null || true
    done
    [ -f "$sysroot/usr/libexec/swift/lib/swift/linux/aarch64/swiftrt.o" ] || die "sdk: no aarch64 swiftrt.o in $debs"
    [ -f "$sysroot/usr/libexec/swift/lib/swift_static/linux/static-executable-args.lnk" ] \
        || die "sdk: no static Swift stdlib in $debs"
    rm -rf "$sysroot/usr/lib/swift" "$sysroot/usr/lib/swift_static" "$sysroot/usr/lib/clang"
    mv "$sysroot/usr/libexec/swift/lib/swift" "$sysroot/usr/lib/swift"
    mv "$sysroot/usr/libexec/swift/lib/swift_static" "$sysroot/usr/lib/swift_static"
    mv "$sysroot/usr/libexec/swift/lib/clang" "$sysroot/usr/lib/clang"
    rm -rf "$sysroot/usr/libexec/swift"
    # A merged-/usr layout, like the target system.
    for dir in lib bin sbin; do [ -e "$sysroot/$dir" ] || ln -s "usr/$dir" "$sysroot/$dir"; done

    cat >"$host_bundle/info.json" <<EOF
{
  "schemaVersion": "1.0",
  "artifacts": {
    "$SDK_ID": {
      "type": "swiftSDK",
      "version": "$swift_version-$key",
      "variants": [{ "path": "$SDK_ID/aarch64-unknown-linux-gnu" }]
    }
  }
}
EOF
    cat >"$variant/swift-sdk.json" <<EOF
{
  "schemaVersion": "4.0",
  "targetTriples": {
    "aarch64-unknown-linux-gnu": {
      "sdkRootPath": "sysroot",
      "swiftResourcesPath": "sysroot/usr/lib/swift",
      "swiftStaticResourcesPath": "sysroot/usr/lib/swift_static",
      "toolsetPaths": ["toolset.json"]
    }
  }
}
EOF
    cat >"$variant/toolset.json" <<EOF
{
  "schemaVersion": "1.0",
  "swiftCompiler": { "extraCLIOptions": ["-use-ld=lld"] }
}
EOF
    touch "$host_bundle/.edged-ready"
    log "sdk: ready ($(du -sh "$host_bundle" | cut -f1))"
}

# Copies the clone (tracked and untracked files that git does not ignore) into the chroot, keeping mtimes so
# SwiftPM rebuilds only what changed.
sync_sources() {
    in_chroot "$CHROOT" bash -c '
        set -e
        mkdir -p /work/src
        cd /host-src
        { git -c safe.directory="*" ls-files -co --exclude-standard 2>/dev/null || find . -type f -not -path "./.git/*"; } \
            | grep -v "^cross/out/" | while read -r f; do if [ -f "$f" ]; then printf "%s\n" "$f"; fi; done >/tmp/src-files
        rsync -a --delete --delete-excluded --exclude=/Package.resolved --exclude=/.build* \
            --files-from=/tmp/src-files /host-src/ /work/src/
        # --files-from does not delete files that left the tree: prune them by hand.
        cd /work/src
        find . -type f -not -path "./.build*" -not -name Package.resolved | sed "s|^\./||" | sort >/tmp/have
        sort /tmp/src-files | comm -23 /tmp/have - | xargs -r rm -f'
    # Stamp the build's version into the copy, never the clone: one version for every architecture of this run,
    # fixed at its start (a commit made while the first architecture builds must not give the second another one).
    bash "$ROOT/cross/stamp-version.sh" "$CHROOT/work/src" "$BUILD_VERSION"
}

host_objcopy() { command -v llvm-objcopy || echo "$(dirname "$(readlink -f "$(command -v swift)")")/llvm-objcopy"; }

# Writes the ld.lld wrapper that drops the unwind tables of Swift code (cross/ld-noeh.sh) to $1 and prints the
# swiftc flags that use it. $1 and the other paths are as the compiler sees them (the chroot's for aarch64).
#   $1 wrapper path (on this machine)  $2 wrapper path (compiler's view)  $3 real ld.lld  $4 llvm-objcopy
#   $5 store of stripped copies  $6 the static Swift libraries folder
noeh_linker() {
    [ "$UNWIND_TABLES" = drop ] || return 0
    mkdir -p "$(dirname "$1")"
    { echo '#!/usr/bin/env bash'
      printf 'NOEH_REAL=%q NOEH_OBJCOPY=%q NOEH_STORE=%q NOEH_SWIFT_STATIC=%q\n' "$3" "$4" "$5" "$6"
      tail -n +2 "$ROOT/cross/ld-noeh.sh"; } >"$1.tmp"
    chmod +x "$1.tmp" && mv "$1.tmp" "$1"
    echo "-Xswiftc -ld-path=$2"
}

build_aarch64() {
    log "aarch64: swift build -c $CONFIG (Swift $(in_chroot "$CHROOT" dpkg-query -W -f '${Version}' swiftlang))"
    sync_sources
    local sysroot=$SDK_BUNDLE/$SDK_ID/aarch64-unknown-linux-gnu/sysroot
    local p ld
    ld=$(noeh_linker "$CHROOT/work/tools/ld-noeh" /work/tools/ld-noeh /usr/libexec/swift/bin/ld.lld \
        /usr/libexec/swift/bin/llvm-objcopy "/work/noeh-aarch64-$CONFIG$SCRATCH_SUFFIX" "$sysroot/usr/lib/swift_static/linux")
    for p in "${PRODUCTS[@]}"; do
        in_chroot "$CHROOT" env \
            PKG_CONFIG_PATH="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig" \
            PKG_CONFIG_LIBDIR="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig" \
            PKG_CONFIG_SYSROOT_DIR="$sysroot" \
            nice -n 19 swift build --package-path /work/src -c "$CONFIG" -j "$JOBS" \
            --scratch-path "/work/build-aarch64-$CONFIG$SCRATCH_SUFFIX" \
            --swift-sdks-path /work/sdks --swift-sdk "$SDK_ID" \
            --static-swift-stdlib -Xswiftc -static-executable "${SIZE_FLAGS[@]}" $ld $EXTRA_FLAGS \
            --product "$p" \
            || die "aarch64 build of $p failed with sid's Swift 6.2 (older than the host's): see cross/README.md, 'Keeping the arm64 build green'"
    done
    local bin objcopy
    objcopy=$(host_objcopy)
    bin=$(in_chroot "$CHROOT" swift build --package-path /work/src -c "$CONFIG" \
        --scratch-path "/work/build-aarch64-$CONFIG$SCRATCH_SUFFIX" --swift-sdks-path /work/sdks --swift-sdk "$SDK_ID" --show-bin-path)
    mkdir -p "$OUT/aarch64"
    for p in "${PRODUCTS[@]}"; do
        # llvm-objcopy strips any ELF machine cleanly (aarch64-linux-gnu-strip prints a spurious error).
        "$objcopy" --strip-all "$CHROOT$bin/$p" "$OUT/aarch64/$p.tmp"
        mv "$OUT/aarch64/$p.tmp" "$OUT/aarch64/$p"
    done
}

build_x86_64() {
    [ "$(uname -m)" = x86_64 ] || die "x86_64 binaries are built natively in the sid chroot; this host is $(uname -m)"
    log "x86_64: swift build -c $CONFIG (Swift $(in_chroot "$CHROOT" dpkg-query -W -f '${Version}' swiftlang), in the sid chroot)"
    sync_sources
    local p ld
    ld=$(noeh_linker "$CHROOT/work/tools/ld-noeh-x86_64" /work/tools/ld-noeh-x86_64 /usr/libexec/swift/bin/ld.lld \
        /usr/libexec/swift/bin/llvm-objcopy "/work/noeh-x86_64-$CONFIG$SCRATCH_SUFFIX" /usr/libexec/swift/lib/swift_static/linux)
    for p in "${PRODUCTS[@]}"; do
        in_chroot "$CHROOT" nice -n 19 swift build --package-path /work/src -c "$CONFIG" -j "$JOBS" \
            --scratch-path "/work/build-x86_64-$CONFIG$SCRATCH_SUFFIX" \
            --static-swift-stdlib -Xswiftc -static-executable "${SIZE_FLAGS[@]}" $ld $EXTRA_FLAGS \
            --product "$p" \
            || die "x86_64 build of $p failed with sid's Swift 6.2 (older than the host's): see cross/README.md, 'Keeping the arm64 build green'"
    done
    local bin objcopy
    bin=$(in_chroot "$CHROOT" swift build --package-path /work/src -c "$CONFIG" \
        --scratch-path "/work/build-x86_64-$CONFIG$SCRATCH_SUFFIX" --show-bin-path)
    objcopy=$(host_objcopy)
    mkdir -p "$OUT/x86_64"
    for p in "${PRODUCTS[@]}"; do
        "$objcopy" --strip-all "$CHROOT$bin/$p" "$OUT/x86_64/$p.tmp"
        mv "$OUT/x86_64/$p.tmp" "$OUT/x86_64/$p"
    done
}

# Fails unless every binary is a static, stripped ELF of the right machine.
check_binaries() {
    local arch=$1 machine p f
    case "$arch" in aarch64) machine=AArch64 ;; x86_64) machine='X86-64|x86-64' ;; esac
    for p in "${PRODUCTS[@]}"; do
        f=$OUT/$arch/$p
        [ -x "$f" ] || die "$f missing"
        LC_ALL=C readelf -h "$f" | grep -qE "Machine: .*($machine)" || die "$f is not an $arch ELF"
        if LC_ALL=C readelf -l "$f" | grep -q 'INTERP'; then die "$f is not static (has a program interpreter)"; fi
        if LC_ALL=C readelf -d "$f" 2>/dev/null | grep -q NEEDED; then die "$f needs shared libraries"; fi
        if LC_ALL=C readelf -S "$f" | grep -qE '\.symtab|\.debug_'; then die "$f is not stripped"; fi
    done
}

# The size budget of the shipped arm64 edged (issue 17): the stripped static binary stays <= 30 MiB
# (EDGED_SIZE_LIMIT_BYTES), else the build fails with cross/size-guard.sh's per-part table (cross/README.md,
# "Size"). Under the limit that is one stat and one line; the table costs a relink with a map (~12 s) only over it.
size_guard() {
    local arch=$1 rc=0
    [ "$arch" = aarch64 ] && [[ " ${PRODUCTS[*]} " == *" edged "* ]] || return 0
    if [ "$CONFIG" != release ] || [ "$UNWIND_TABLES" != drop ]; then
        log "size guard: skipped for a $CONFIG build with unwind tables ($UNWIND_TABLES): it measures the shipped binary only"
        return 0
    fi
    bash "$ROOT/cross/size-guard.sh" --chroot "$CHROOT" --scratch "/work/build-aarch64-$CONFIG$SCRATCH_SUFFIX" \
        "$OUT/aarch64/edged" || rc=$?
    case "$rc" in
        0) ;;
        1) die "aarch64 edged is over its size budget: the table above shows where the bytes go (cross/README.md, 'Size')" ;;
        *) die "the size guard of aarch64 edged could not run (above)" ;;
    esac
}

package() {
    local arch=$1 version name stage
    version=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)
    name=edged-$version-linux-$arch
    stage=$(mktemp -d)
    mkdir -p "$stage/$name/bin"
    cp "${PRODUCTS[@]/#/$OUT/$arch/}" "$stage/$name/bin/"
    [ -d "$ROOT/systemd" ] && cp -r "$ROOT/systemd" "$stage/$name/"
    [ -d "$ROOT/deploy" ] && cp -r "$ROOT/deploy" "$stage/$name/"
    cp "$ROOT/cross/INSTALL.md" "$stage/$name/INSTALL.md"
    rm -f "$OUT"/edged-*-linux-"$arch".tar.gz
    tar -C "$stage" --owner=0 --group=0 -czf "$OUT/$name.tar.gz" "$name"
    rm -rf "$stage"
    log "$arch: $OUT/$name.tar.gz"
}

main() {
    ensure_host_tools
    mkdir -p "$CACHE" "$OUT"
    exec 9>"$CACHE/.lock"
    flock 9
    local start=$SECONDS arch
    for arch in $ARCHS; do
        case "$arch" in
            aarch64) ensure_chroot; ensure_chroot_layer; ensure_sdk; build_aarch64 ;;
            x86_64) ensure_chroot; ensure_chroot_layer; build_x86_64 ;;
            *) die "unknown architecture $arch" ;;
        esac
        check_binaries "$arch"
        size_guard "$arch"
        package "$arch"
    done
    for arch in $ARCHS; do
        for p in "${PRODUCTS[@]}"; do
            printf '%-8s %-14s %10d bytes\n' "$arch" "$p" "$(stat -c %s "$OUT/$arch/$p")"
        done
    done
    log "done in $((SECONDS - start)) s"
}

main
