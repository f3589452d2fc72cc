#!/usr/bin/env bash
# The gateway VM: a Debian trixie disk image built from Debian's packages alone, booted under qemu (x86_64 with
# KVM, aarch64 with TCG), systemd as PID 1 on the unified cgroup hierarchy, reached over ssh on a forwarded
# loopback port. Sourced by cross/gateway-vm.sh; run directly for manual use:
#
#   cross/vm/lib.sh image x86_64|aarch64          build (or reuse) the cached image, print its folder
#   cross/vm/lib.sh boot  x86_64|aarch64 [NAME]   boot a VM, wait for ssh, print how to reach it, keep it
#                                                 running until Enter or Ctrl-C (then it is powered off)
#   cross/vm/lib.sh ssh NAME [cmd...]             ssh into a VM started by `boot` (another terminal)
#
# Functions (NAME is any short word; a VM's files live in $EDGED_VM_RUN/NAME, never in the clone):
#   vm_image ARCH                   sets VM_IMAGE_DIR (base.raw, vmlinuz, initrd.img, id_ed25519, versions)
#   vm_start ARCH NAME [disk]       overlay over the image (or over [disk], raw) + qemu, in the background
#   vm_wait_ssh NAME TIMEOUT        until `ssh true` works; prints the boot-to-ssh time
#   vm_ssh NAME cmd...              one command in the guest as root (the words are joined by ssh, like ssh does)
#   vm_scp_to NAME SRC DST          copies SRC (host) to DST (guest)
#   vm_reboot NAME TIMEOUT          systemctl reboot in the guest; returns when ssh answers with a new boot id
#   vm_boot_id NAME                 the guest's /proc/sys/kernel/random/boot_id
#   vm_poweroff_hard NAME           qemu quits at once (monitor `quit`, else kill -9): no guest shutdown
#   vm_restart NAME                 boots again on the same overlay after vm_poweroff_hard (or a guest poweroff)
#   vm_stop NAME                    clean poweroff from inside, waits, removes the run folder
#   vm_port NAME / vm_serial_log NAME / vm_running NAME / vm_accel NAME (kvm|tcg)
#   vm_cleanup_all                  hard-stops every VM this shell started (installed on EXIT when sourced;
#                                   a watcher process also kills a VM's qemu within 2 s once the script is gone)
#
# Environment: EDGED_CROSS_CACHE (default /var/cache/edged-cross; images in its vm/ folder),
#   EDGED_VM_RUN (default /tmp/edged-vm), EDGED_VM_MIRROR (default http://deb.debian.org/debian),
#   EDGED_VM_MEM (MiB, default 1024), EDGED_VM_SMP (default 2),
#   EDGED_VM_FWD ("HOSTPORT:GUESTPORT ..." extra loopback forwards, read by vm_start),
#   EDGED_VM_ACCEL (kvm|tcg; default kvm for x86_64 when /dev/kvm works), EDGED_VM_AARCH64_CPU (default cortex-a72),
#   EDGED_VM_X86_CPU (default host,-arch-capabilities with KVM, max with TCG).
# The guest reaches the host's 127.0.0.1 as 10.0.2.2 (qemu user-mode networking). At run time nothing in the
# guest talks to anything else: no apt timers, no time sync, no DNS.
# Needs root (debootstrap, chroot) and the host packages: debootstrap qemu-system-x86 qemu-system-arm qemu-utils
# qemu-user-static e2fsprogs openssh-client socat curl xz-utils cpio.

VM_SUITE=trixie
# Bump when the recipe below (or a file under cross/vm/guest/) changes; the image key is derived from it,
# the package list and the versions of those packages in the mirror's index.
VM_RECIPE=2
# containernetworking-plugins: the pod network of the joined step (bridge, host-local, loopback in /usr/lib/cni).
VM_PACKAGES="systemd-sysv udev openssh-server iproute2 procps kmod sqlite3 ca-certificates e2fsprogs containernetworking-plugins"
# Unpacked on the host, never run under emulation: the kernel (its .deb, no maintainer scripts: the guest needs no
# initramfs-tools) and the static busybox of the initrd made on the host.
VM_HOST_PACKAGES="busybox-static"
VM_DISK_SIZE=4G
# Modules the host-made initrd loads (with their dependencies, from modules.dep) to mount /dev/vda; built-in ones
# are skipped. udev in the booted system loads the rest.
VM_INITRD_MODULES="virtio_pci virtio_mmio virtio_blk ext4 crc32c_generic"
VM_TIMERS_OFF="apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer man-db.timer"

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_CACHE=${EDGED_CROSS_CACHE:-/var/cache/edged-cross}/vm
VM_RUN=${EDGED_VM_RUN:-/tmp/edged-vm}
VM_MIRROR=${EDGED_VM_MIRROR:-http://deb.debian.org/debian}
VM_STARTED=()

vm_log() { printf '[vm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
vm_die() { vm_log "error: $*"; return 1; }
vm__now() { date +%s.%N; }
vm__since() { awk -v a="$1" -v b="$(vm__now)" 'BEGIN { printf "%.1f", b - a }'; }

vm__debarch() {
    case "$1" in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        *) vm_die "unknown architecture '$1': use x86_64 or aarch64"; return 1 ;;
    esac
}

# --- image -------------------------------------------------------------------------------------------------

# arm64 maintainer scripts run during debootstrap through qemu-aarch64-static; the kernel supports binfmt_misc
# but nothing mounts or registers it on this host. F (fix binary): the interpreter is opened now, so the chroot
# needs no copy of it.
vm__ensure_binfmt_aarch64() {
    local bm=/proc/sys/fs/binfmt_misc
    if [ ! -e "$bm/register" ]; then
        vm_log "binfmt_misc: mounting $bm (not mounted on this host)"
        mount -t binfmt_misc binfmt_misc "$bm" || { vm_die "cannot mount binfmt_misc at $bm"; return 1; }
    fi
    if [ -e "$bm/qemu-aarch64" ]; then
        grep -q '^enabled' "$bm/qemu-aarch64" || echo 1 >"$bm/qemu-aarch64"
        grep -q '^flags: .*F' "$bm/qemu-aarch64" \
            || vm_log "binfmt_misc: qemu-aarch64 is registered without the F flag; chroots need /usr/bin/qemu-aarch64-static inside"
        return 0
    fi
    local qemu=/usr/bin/qemu-aarch64-static
    [ -x "$qemu" ] || { vm_die "$qemu missing: apt-get install qemu-user-static"; return 1; }
    # Magic and mask of an aarch64 ELF executable, as qemu's scripts/qemu-binfmt-conf.sh has them.
    local magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    vm_log "binfmt_misc: registering qemu-aarch64 ($qemu, flags OCF)"
    printf ':qemu-aarch64:M::%s:%s:%s:OCF' "$magic" "$mask" "$qemu" >"$bm/register" \
        || { vm_die "registering qemu-aarch64 in $bm/register failed"; return 1; }
}

# Versions of the recipe's packages (and of the kernel the metapackage points at) in the suite's index, one
# "name version" a line. The index is fetched again when the mirror has a newer one (curl -z).
vm__package_versions() {
    local darch=$1 idx="$VM_CACHE/index/$VM_SUITE-$1-Packages.xz"
    mkdir -p "$VM_CACHE/index"
    # Asked again at most every 10 minutes (a script calls vm_start several times).
    if [ -f "$idx" ] && [ -n "$(find "$idx.checked" -mmin -10 2>/dev/null)" ]; then
        :
    elif ! curl -fsS -z "$idx" -o "$idx.new" -R "$VM_MIRROR/dists/$VM_SUITE/main/binary-$darch/Packages.xz" 2>"$VM_CACHE/index/curl.err"; then
        [ -f "$idx" ] || { vm_die "cannot fetch the $VM_SUITE package index from $VM_MIRROR: $(cat "$VM_CACHE/index/curl.err")"; return 1; }
        vm_log "image: mirror unreachable, using the cached package index ($idx)"
    fi
    [ -s "$idx.new" ] && mv "$idx.new" "$idx"
    rm -f "$idx.new"
    touch "$idx.checked"
    # The versions are kept next to the index (unpacking it takes seconds); the recipe's package list is part
    # of the file name.
    local vfile
    vfile=$idx.$(echo "$VM_PACKAGES $VM_HOST_PACKAGES" | sha256sum | cut -c1-8).versions
    if [ -s "$vfile" ] && [ "$vfile" -nt "$idx" ]; then cat "$vfile"; return 0; fi
    xz -dc "$idx" | awk -v want="$VM_PACKAGES $VM_HOST_PACKAGES linux-image-$darch" '
        BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) need[w[i]] = 1 }
        /^Package: / { p = $2 }
        /^Version: / { v[p] = $2 }
        /^Depends: / { d[p] = $0 }
        END {
            for (p in need) print p, v[p]
            k = "linux-image-'"$darch"'"
            if (match(d[k], /linux-image-[0-9][^ ,]*/)) { kp = substr(d[k], RSTART, RLENGTH); print kp, v[kp] }
        }' | sort >"$vfile.$$"
    mv "$vfile.$$" "$vfile"
    cat "$vfile"
}

vm__in_root() {
    local root=$1; shift
    unshare --mount --propagation private -- bash -c '
        set -e; r=$1; shift
        mount -t proc proc "$r/proc"; mount -t sysfs sys "$r/sys"; mount --rbind /dev "$r/dev"
        exec chroot "$r" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
            DEBIAN_FRONTEND=noninteractive "$@"' vm__in_root "$root" "$@"
}

# Guest configuration, written into the root folder before the kernel is installed.
vm__configure_root() {
    local root=$1 darch=$2 pub=$3
    echo "edged-gw-$darch" >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tedged-gw-%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$darch" >"$root/etc/hosts"
    printf 'LABEL=edged-root\t/\text4\terrors=remount-ro\t0\t1\n' >"$root/etc/fstab"
    # The first NIC (user-mode networking) by DHCP; no DNS: at run time the guest talks to the host only.
    mkdir -p "$root/etc/systemd/network"
    printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n[DHCPv4]\nUseDNS=no\nUseNTP=no\n' \
        >"$root/etc/systemd/network/10-user.network"
    # Persistent journal: what edged logged before a reboot or a power cut stays readable.
    mkdir -p "$root/var/log/journal" "$root/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=persistent\n' >"$root/etc/systemd/journald.conf.d/10-persistent.conf"
    # root by the generated key only (sshd's default PermitRootLogin is prohibit-password).
    install -d -m 700 "$root/root/.ssh"
    install -m 600 "$pub" "$root/root/.ssh/authorized_keys"
    mkdir -p "$root/etc/ssh/sshd_config.d"
    printf 'UseDNS no\nPasswordAuthentication no\n' >"$root/etc/ssh/sshd_config.d/10-edged-vm.conf"
    # apt needs no lists at run time (apt install ./x.deb of a package whose dependencies are installed).
    printf 'APT::Install-Recommends "false";\nAPT::Periodic::Enable "0";\n' >"$root/etc/apt/apt.conf.d/10-edged-vm"
    echo 'do_symlinks = yes' >"$root/etc/kernel-img.conf"
}

vm_image() {
    local arch=$1 darch
    darch=$(vm__debarch "$arch") || return 1
    [ "$(id -u)" = 0 ] || { vm_die "building the VM image needs root (debootstrap, chroot)"; return 1; }
    local t0 versions key guest_hash
    t0=$(vm__now)
    versions=$(vm__package_versions "$darch") || return 1
    if grep -qE ' $' <<<"$versions"; then
        vm_die "packages missing from $VM_SUITE/$darch: $(grep -E ' $' <<<"$versions" | tr '\n' ' ')"; return 1
    fi
    guest_hash=$( (declare -f vm__configure_root vm__build_image vm__make_initrd vm__fetch_deb
        if [ -d "$VM_LIB_DIR/guest" ]; then find "$VM_LIB_DIR/guest" -type f | sort | xargs cat; fi) | sha256sum | cut -c1-12)
    key=$(printf '%s\n' "$VM_RECIPE $VM_SUITE $VM_PACKAGES $VM_HOST_PACKAGES $VM_DISK_SIZE $VM_INITRD_MODULES $VM_TIMERS_OFF $guest_hash" "$versions" | sha256sum | cut -c1-12)
    VM_IMAGE_DIR=$VM_CACHE/$VM_SUITE-$arch-$key
    if [ -f "$VM_IMAGE_DIR/.ready" ]; then
        vm_log "image $arch: cached ($VM_IMAGE_DIR, $(vm__since "$t0") s)"
        return 0
    fi
    mkdir -p "$VM_CACHE"
    # One build per image at a time (two scripts may want the same one).
    exec {VM_LOCK_FD}>"$VM_CACHE/.lock-$arch"
    flock "$VM_LOCK_FD"
    if [ -f "$VM_IMAGE_DIR/.ready" ]; then
        exec {VM_LOCK_FD}>&-
        vm_log "image $arch: built meanwhile by another run ($VM_IMAGE_DIR)"
        return 0
    fi
    local rc=0
    vm__build_image "$arch" "$darch" "$versions" || rc=$?
    exec {VM_LOCK_FD}>&-
    [ $rc = 0 ] || return $rc
    vm_log "image $arch: built in $(vm__since "$t0") s: $VM_IMAGE_DIR ($(du -sh --apparent-size "$VM_IMAGE_DIR/base.raw" | cut -f1) sparse, $(du -sh "$VM_IMAGE_DIR/base.raw" | cut -f1) used)"
}

# Downloads PKG of DARCH (the version in the cached index) into DIR, checks its SHA256; prints the file's path.
vm__fetch_deb() {
    local darch=$1 pkg=$2 dir=$3 meta file sum
    meta=$(xz -dc "$VM_CACHE/index/$VM_SUITE-$darch-Packages.xz" | awk -v p="$pkg" '
        /^Package: / { on = ($2 == p) } on && /^Filename: / { f = $2 } on && /^SHA256: / { h = $2 } END { print f, h }')
    file=${meta% *}; sum=${meta#* }
    [ -n "$file" ] && [ -n "$sum" ] || { vm_die "$pkg ($darch) is not in the cached $VM_SUITE index"; return 1; }
    curl -fsS -o "$dir/${file##*/}" "$VM_MIRROR/$file" || { vm_die "cannot download $VM_MIRROR/$file"; return 1; }
    echo "$sum  $dir/${file##*/}" | sha256sum -c --quiet >/dev/null \
        || { vm_die "$dir/${file##*/}: SHA256 differs from the $VM_SUITE index (broken download or mirror)"; return 1; }
    echo "$dir/${file##*/}"
}

# The initrd, made on the host: the guest arch's static busybox, the modules that mount the root disk (and what
# they depend on, in load order) and an /init that loads them, mounts /dev/vda read-only and hands over to
# systemd. No udev in it: a TCG boot spends its time elsewhere.
vm__make_initrd() {
    local root=$1 kver=$2 busybox=$3 out=$4 ird=$5
    local mdir=$root/usr/lib/modules/$kver
    rm -rf "$ird"; mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
    install -m 755 "$busybox" "$ird/bin/busybox"
    local m order=() seen=" " line deps d
    vm__initrd_add() {  # depth first: a module's dependencies load before it
        local path=$1 dep
        case "$seen" in *" $path "*) return 0 ;; esac
        seen+="$path "
        for dep in $(awk -v p="$path:" '$1 == p { $1 = ""; print }' "$mdir/modules.dep"); do vm__initrd_add "$dep"; done
        order+=("$path")
    }
    for m in $VM_INITRD_MODULES; do
        line=$(awk -v m="$m" '{ f = $1; sub(/:$/, "", f); n = f; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n)
            if (n == m) { print f; exit } }' "$mdir/modules.dep")
        if [ -n "$line" ]; then vm__initrd_add "$line"
        elif grep -qE "/${m//_/[-_]}\.ko\$" "$mdir/modules.builtin"; then :
        else vm_die "module $m is neither in $mdir/modules.dep nor built into kernel $kver"; return 1
        fi
    done
    local n=0 f
    : >"$ird/lib/modules/order"
    for f in "${order[@]}"; do
        n=$((n + 1))
        case "$f" in
            *.ko.xz) xz -dc "$mdir/$f" >"$ird/lib/modules/$n.ko" ;;
            *.ko.zst) zstd -qdc "$mdir/$f" >"$ird/lib/modules/$n.ko" ;;
            *.ko.gz) gzip -dc "$mdir/$f" >"$ird/lib/modules/$n.ko" ;;
            *) cp "$mdir/$f" "$ird/lib/modules/$n.ko" ;;
        esac || { vm_die "cannot unpack $mdir/$f"; return 1; }
        echo "$n.ko ${f##*/}" >>"$ird/lib/modules/order"
    done
    cat >"$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
while read -r ko name; do
    insmod "/lib/modules/$ko" || echo "initrd: insmod $name failed" >/dev/console
done </lib/modules/order
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then echo "initrd: /dev/vda did not appear in 30 s; dropping to a shell" >/dev/console; exec sh </dev/console >/dev/console 2>&1; fi
    sleep 0.1
done
mount -t ext4 -o ro /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda; dropping to a shell" >/dev/console; exec sh </dev/console >/dev/console 2>&1; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
    chmod 755 "$ird/init"
    (cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$out" \
        || { vm_die "making the initrd failed"; return 1; }
}

vm__build_image() {
    local arch=$1 darch=$2 versions=$3
    local partial=$VM_IMAGE_DIR.partial
    local root=$partial/root log=$partial/build.log
    command -v cpio >/dev/null || { vm_die "cpio missing (it packs the VM's initrd): apt-get install cpio"; return 1; }
    rm -rf "$partial"
    mkdir -p "$partial/debs"
    printf '%s\n' "$versions" >"$partial/versions"
    [ "$arch" = aarch64 ] && { vm__ensure_binfmt_aarch64 || return 1; }
    ssh-keygen -q -t ed25519 -N '' -C "edged-vm-$arch" -f "$partial/id_ed25519"
    local inc t
    inc=$(tr ' ' ',' <<<"$VM_PACKAGES")
    t=$(vm__now)
    # dpkg's fsyncs cost much of the build under qemu-user; a power cut during the build throws the build away
    # anyway (it has no .ready). The file is in place before debootstrap runs dpkg in the target. Not --foreign:
    # its second stage runs debootstrap's own perl over the package index under emulation (minutes per call).
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
    echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/zz-edged-vm-build"
    vm_log "image $arch: debootstrap --variant=minbase $VM_SUITE ($darch) from $VM_MIRROR (log: $log)"
    debootstrap --variant=minbase --arch="$darch" --include="$inc" \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$VM_SUITE" "$root" "$VM_MIRROR" >"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; vm_die "debootstrap failed (log: $log)"; return 1; }
    rm -f "$root/etc/dpkg/dpkg.cfg.d/zz-edged-vm-build"
    vm_log "image $arch: debootstrap $(vm__since "$t") s"
    vm__configure_root "$root" "$darch" "$partial/id_ed25519.pub"
    # The kernel: unpacked from its .deb on the host (its maintainer scripts would build an initramfs under
    # emulation); the guest's depmod writes modules.dep (the initrd's load order, udev's modprobe).
    local kpkg kdeb bbdeb kver
    kpkg=$(awk '$1 ~ /^linux-image-[0-9]/ { print $1 }' <<<"$versions")
    [ -n "$kpkg" ] || { vm_die "no versioned kernel package behind linux-image-$darch in the index"; return 1; }
    vm_log "image $arch: $kpkg and busybox-static unpacked on the host"
    kdeb=$(vm__fetch_deb "$darch" "$kpkg" "$partial/debs") || return 1
    bbdeb=$(vm__fetch_deb "$darch" busybox-static "$partial/debs") || return 1
    mkdir -p "$partial/kernel" "$partial/busybox"
    dpkg-deb -x "$kdeb" "$partial/kernel" && dpkg-deb -x "$bbdeb" "$partial/busybox" \
        || { vm_die "dpkg-deb -x failed on $kdeb or $bbdeb"; return 1; }
    kver=$(ls "$partial/kernel/usr/lib/modules" 2>/dev/null | sort -V | tail -n1)
    [ -n "$kver" ] && [ -f "$partial/kernel/boot/vmlinuz-$kver" ] \
        || { vm_die "$kdeb holds no /boot/vmlinuz and /usr/lib/modules"; return 1; }
    mkdir -p "$root/usr/lib/modules" "$root/boot"
    cp -a "$partial/kernel/usr/lib/modules/$kver" "$root/usr/lib/modules/"
    cp "$partial/kernel/boot/config-$kver" "$root/boot/" 2>/dev/null || true
    vm__in_root "$root" depmod -a "$kver" >>"$log" 2>&1 || { vm_die "depmod -a $kver in the image failed (log: $log)"; return 1; }
    cp "$partial/kernel/boot/vmlinuz-$kver" "$partial/vmlinuz"
    local bb=$partial/busybox/usr/bin/busybox
    [ -x "$bb" ] || bb=$partial/busybox/bin/busybox
    [ -x "$bb" ] || { vm_die "$bbdeb holds no busybox binary"; return 1; }
    vm__make_initrd "$root" "$kver" "$bb" "$partial/initrd.img" "$partial/initrd" || return 1
    echo "$kver" >"$partial/kernel-version"
    rm -rf "$partial/debs" "$partial/kernel" "$partial/busybox" "$partial/initrd"
    # Units: networkd for DHCP; nothing that wakes up on its own and eats CPU or reaches the network.
    systemctl --root="$root" enable systemd-networkd.service >>"$log" 2>&1
    for t in $VM_TIMERS_OFF; do systemctl --root="$root" mask "$t" >>"$log" 2>&1; done
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root/debootstrap"
    : >"$root/etc/machine-id"   # a fresh one on first boot (systemd's firstboot logic)
    vm_log "image $arch: kernel $kver; mkfs.ext4 -d ($VM_DISK_SIZE sparse)"
    truncate -s "$VM_DISK_SIZE" "$partial/base.raw"
    mkfs.ext4 -q -F -L edged-root -d "$root" "$partial/base.raw" >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; vm_die "mkfs.ext4 -d failed (log: $log)"; return 1; }
    rm -rf "$root"
    touch "$partial/.ready"
    rm -rf "$VM_IMAGE_DIR"
    mv "$partial" "$VM_IMAGE_DIR"
}

# --- running VMs -------------------------------------------------------------------------------------------

vm__dir() { echo "$VM_RUN/$1"; }
vm_port() { cat "$(vm__dir "$1")/ssh-port"; }
vm_serial_log() { echo "$(vm__dir "$1")/serial.log"; }
# kvm or tcg: how the VM runs (for timeouts: TCG is several times slower).
vm_accel() { cat "$(vm__dir "$1")/accel"; }

vm_running() {
    local pidf
    pidf="$(vm__dir "$1")/qemu.pid"
    [ -s "$pidf" ] || return 1
    # A daemonized qemu that exited stays a zombie when PID 1 does not reap (as in some containers): not running.
    local state
    state=$(awk '{print $3}' "/proc/$(cat "$pidf")/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

vm__free_port() {
    local p used
    used=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://')
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 20000))
        grep -qx "$p" <<<"$used" || { echo "$p"; return 0; }
    done
    vm_die "no free loopback port found"
}

vm_start() {
    local arch=$1 name=$2 disk=${3:-}
    local dir
    dir=$(vm__dir "$name")
    vm_running "$name" && { vm_die "VM $name is already running (pid $(cat "$dir/qemu.pid"))"; return 1; }
    if [ -z "$disk" ]; then
        vm_image "$arch" || return 1
        disk=$VM_IMAGE_DIR/base.raw
    fi
    local imgdir
    imgdir=$(dirname "$disk")
    for f in vmlinuz initrd.img id_ed25519; do
        [ -f "$imgdir/$f" ] || { vm_die "$imgdir/$f missing: a disk for vm_start must sit in an image folder made by vm_image"; return 1; }
    done
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$arch" >"$dir/arch"
    cp "$imgdir/id_ed25519" "$dir/id_ed25519"
    chmod 600 "$dir/id_ed25519"
    qemu-img create -q -f qcow2 -b "$disk" -F raw "$dir/overlay.qcow2" || { vm_die "qemu-img create failed"; return 1; }
    local port fwd hp gp
    port=$(vm__free_port) || return 1
    echo "$port" >"$dir/ssh-port"
    fwd="hostfwd=tcp:127.0.0.1:$port-:22"
    for hp in ${EDGED_VM_FWD:-}; do
        gp=${hp#*:}; hp=${hp%%:*}
        fwd+=",hostfwd=tcp:127.0.0.1:$hp-:$gp"
    done
    local mem=${EDGED_VM_MEM:-1024} smp=${EDGED_VM_SMP:-2} accel qemu console machine=() cpu
    # loglevel=4: the kernel's warnings stay on the serial log, its chatter (slow on an emulated UART) does not.
    local append="root=LABEL=edged-root ro systemd.unified_cgroup_hierarchy=1 fsck.repair=yes loglevel=4"
    if [ "$arch" = x86_64 ]; then
        qemu=qemu-system-x86_64 console=ttyS0
        accel=${EDGED_VM_ACCEL:-}
        if [ -z "$accel" ]; then
            if [ -d /sys/module/kvm_pvm ]; then
                # PVM (kvm_pvm, "pagetable-based virtual machine") serves /dev/kvm on some cloud sandboxes. It
                # runs a stock kernel's early boot by emulating it: Debian's bzImage stops in its zstd
                # decompressor (BMI2 instructions: "KVM internal error. Suberror: 1"), the uncompressed kernel
                # booted as PVH prints nothing for minutes. TCG boots the same kernel to ssh in about 90 s.
                accel=tcg
                vm_log "VM $name: /dev/kvm here is PVM (kvm_pvm), which cannot boot Debian's kernel: x86_64 runs under TCG (emulated; longer timeouts; EDGED_VM_ACCEL=kvm forces KVM)"
            elif [ -r /dev/kvm ] && [ -w /dev/kvm ] && qemu-system-x86_64 -accel kvm -M none -display none -S \
                -monitor none -serial none -daemonize -pidfile "$dir/probe.pid" 2>/dev/null; then
                kill "$(cat "$dir/probe.pid")" 2>/dev/null; rm -f "$dir/probe.pid"
                accel=kvm
            else
                accel=tcg
                vm_log "VM $name: /dev/kvm is not usable here: x86_64 runs under TCG (emulated, about 10x slower; use longer timeouts)"
            fi
        fi
        # No VGA, CD-ROM, floppy or parallel port: their drivers cost seconds of every TCG boot.
        machine=(-M q35 -nodefaults)
        # -cpu host without arch-capabilities: this nested KVM refuses to set MSR 0x10a (ARCH_CAPABILITIES) and
        # qemu 7.2 then aborts at start.
        cpu=${EDGED_VM_X86_CPU:-$([ "$accel" = kvm ] && echo host,-arch-capabilities || echo max)}
    else
        qemu=qemu-system-aarch64 console=ttyAMA0 accel=tcg
        machine=(-M virt)
        cpu=${EDGED_VM_AARCH64_CPU:-cortex-a72}
    fi
    echo "$accel" >"$dir/accel"
    append+=" console=$console"
    # The command line is kept in the run folder: vm_restart boots the same machine on the same overlay.
    local cmd=("$qemu" "${machine[@]}" -accel "$accel" -cpu "$cpu" -m "$mem" -smp "$smp"
        -kernel "$imgdir/vmlinuz" -initrd "$imgdir/initrd.img" -append "$append"
        -drive "file=$dir/overlay.qcow2,format=qcow2,if=virtio"
        -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0
        -device virtio-rng-pci
        -display none -serial "file:$dir/serial.log" -monitor "unix:$dir/monitor.sock,server,nowait"
        -pidfile "$dir/qemu.pid" -daemonize)
    printf '%q ' "${cmd[@]}" >"$dir/qemu.cmd"
    VM_STARTED+=("$name")
    vm__boot "$name" || return 1
    vm__watch "$name"
}

# A watcher per VM kills its qemu once the script that started it is gone, even when the EXIT trap did not run
# (the script replaced it, or was killed with SIGKILL). It checks every 2 s and holds none of the script's
# output open.
vm__watch() {
    local name=$1 owner=$$ dir
    dir=$(vm__dir "$name")
    (
        trap '' INT TERM HUP
        vm__close_fds
        while kill -0 "$owner" 2>/dev/null; do sleep 2; done
        if vm_running "$name"; then kill -9 "$(cat "$dir/qemu.pid")"; fi
    ) </dev/null >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
}

# Closes every descriptor above 2 in the current (sub)shell, before it execs something long-lived.
vm__close_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
    done
    return 0
}

vm__boot() {
    local name=$1 dir
    dir=$(vm__dir "$name")
    rm -f "$dir/qemu.pid" "$dir/monitor.sock"
    # The serial log of every boot is kept: serial.log is the current one, serial.log.N the earlier ones.
    if [ -f "$dir/serial.log" ]; then
        local n=1
        while [ -e "$dir/serial.log.$n" ]; do n=$((n + 1)); done
        mv "$dir/serial.log" "$dir/serial.log.$n"
    fi
    vm__now >"$dir/boot-start"
    # qemu -daemonize keeps every descriptor it inherits: without closing them, a caller's pipe (e.g. a step's
    # output through `> >(tee log)`) never reaches EOF while the VM runs, and the caller waits forever.
    local cmd
    cmd=$(cat "$dir/qemu.cmd")
    ( vm__close_fds; exec bash -c "$cmd" ) </dev/null >"$dir/qemu.err" 2>&1 \
        || { vm_die "qemu did not start for VM $name: $(cat "$dir/qemu.err")"; return 1; }
    vm_log "VM $name ($(cat "$dir/arch"), $(cat "$dir/accel")): qemu pid $(cat "$dir/qemu.pid"), ssh on 127.0.0.1:$(cat "$dir/ssh-port"), serial log $dir/serial.log"
}

vm__ssh_opts() {
    local dir
    dir=$(vm__dir "$1")
    echo "-i $dir/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=6"
}

vm_ssh() {
    local name=$1; shift
    # shellcheck disable=SC2046
    ssh $(vm__ssh_opts "$name") -p "$(vm_port "$name")" root@127.0.0.1 "$@"
}

vm_scp_to() {
    local name=$1 src=$2 dst=$3
    # shellcheck disable=SC2046
    scp -q $(vm__ssh_opts "$name") -P "$(vm_port "$name")" "$src" "root@127.0.0.1:$dst"
}

vm_wait_ssh() {
    local name=$1 timeout=$2 dir start
    dir=$(vm__dir "$name")
    start=$(cat "$dir/boot-start")
    local deadline=$(( $(date +%s) + timeout ))
    while :; do
        if ! vm_running "$name"; then
            tail -n 30 "$dir/serial.log" >&2 2>/dev/null
            vm_die "VM $name: qemu exited while waiting for ssh (serial log above, full: $dir/serial.log)"; return 1
        fi
        if vm_ssh "$name" true 2>/dev/null </dev/null; then
            local took
            took=$(vm__since "$start")
            echo "$took" >"$dir/boot-to-ssh"
            vm_log "VM $name: ssh up $took s after qemu started"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 30 "$dir/serial.log" >&2 2>/dev/null
            vm_die "VM $name: no ssh within $timeout s (serial log above, full: $dir/serial.log)"; return 1
        fi
        sleep 1
    done
}

vm_boot_id() { vm_ssh "$1" cat /proc/sys/kernel/random/boot_id </dev/null; }

# `systemctl reboot` in the guest (qemu keeps running and boots again); returns when ssh answers with a new boot id.
vm_reboot() {
    local name=$1 timeout=$2 old new start
    old=$(vm_boot_id "$name") || { vm_die "VM $name: no ssh before the reboot"; return 1; }
    start=$(vm__now)
    vm__now >"$(vm__dir "$name")/boot-start"
    vm_ssh "$name" systemctl reboot </dev/null >/dev/null 2>&1 || true
    local deadline=$(( $(date +%s) + timeout ))
    while :; do
        vm_running "$name" || { vm_die "VM $name: qemu exited during the reboot (serial log: $(vm_serial_log "$name"))"; return 1; }
        new=$(vm_boot_id "$name" 2>/dev/null) || new=
        if [ -n "$new" ] && [ "$new" != "$old" ]; then
            vm_log "VM $name: rebooted, ssh up again $(vm__since "$start") s after systemctl reboot"
            return 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$(vm_serial_log "$name")" >&2; vm_die "VM $name: not back within $timeout s after systemctl reboot (serial log above)"; return 1; }
        sleep 2
    done
}

# Waits up to $2 s for qemu to exit.
vm__wait_exit() {
    local name=$1 t=$2
    while vm_running "$name" && [ "$t" -gt 0 ]; do sleep 1; t=$((t - 1)); done
    ! vm_running "$name"
}

vm_poweroff_hard() {
    local name=$1 dir pid
    dir=$(vm__dir "$name")
    vm_running "$name" || { vm_log "VM $name: not running"; return 0; }
    pid=$(cat "$dir/qemu.pid")
    if [ -S "$dir/monitor.sock" ]; then
        echo quit | socat - "UNIX-CONNECT:$dir/monitor.sock" >/dev/null 2>&1 || true
    fi
    if ! vm__wait_exit "$name" 10; then
        vm_log "VM $name: monitor quit did not stop qemu; kill -9 $pid"
        kill -9 "$pid" 2>/dev/null || true
        vm__wait_exit "$name" 10 || { vm_die "VM $name: qemu $pid survives kill -9"; return 1; }
    fi
    vm_log "VM $name: powered off hard (no guest shutdown)"
}

vm_restart() {
    local name=$1
    vm_running "$name" && { vm_die "VM $name is still running: vm_poweroff_hard or vm_stop it first"; return 1; }
    vm__boot "$name"
}

vm_stop() {
    local name=$1 dir
    dir=$(vm__dir "$name")
    [ -d "$dir" ] || return 0
    if vm_running "$name"; then
        vm_ssh "$name" systemctl poweroff </dev/null >/dev/null 2>&1 || true
        if vm__wait_exit "$name" "$([ "$(cat "$dir/accel")" = kvm ] && echo 60 || echo 180)"; then
            vm_log "VM $name: powered off cleanly"
        else
            vm_log "VM $name: no clean poweroff in time; powering off hard"
            vm_poweroff_hard "$name" || true
        fi
    fi
    rm -rf "$dir"
    local i
    for i in "${!VM_STARTED[@]}"; do [ "${VM_STARTED[$i]}" = "$name" ] && unset 'VM_STARTED[i]'; done
    return 0
}

# No qemu outlives the script: every VM this shell started is powered off hard. The run folders stay (serial
# logs) until the next vm_start of the same name.
vm_cleanup_all() {
    local name
    for name in "${VM_STARTED[@]}"; do
        vm_running "$name" && vm_poweroff_hard "$name" 2>/dev/null
    done
    VM_STARTED=()
    return 0
}

# Adds vm_cleanup_all to the caller's EXIT trap (keeping what it already runs there).
vm__install_trap() {
    local prev
    prev=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
    case "$prev" in *vm_cleanup_all*) return 0 ;; esac
    # shellcheck disable=SC2064
    trap "vm_cleanup_all${prev:+; $prev}" EXIT
}
vm__install_trap

# Boots ARCH, checks systemd and cgroup v2, runs cross/out/ARCH/edged --version in the guest, reboots, powers
# off hard and boots again; prints the timings. Exits non-zero on the first check that fails.
vm__selftest() {
    local arch=$1 name=selftest-$1 edged
    edged=$(cd "$VM_LIB_DIR/../out/$arch" 2>/dev/null && pwd)/edged
    [ -x "$edged" ] || { vm_die "$edged missing: run cross/build.sh first"; return 1; }
    local t0 timeout
    t0=$(vm__now)
    vm_image "$arch" || return 1
    echo "image: $(vm__since "$t0") s, $(du -sh "$VM_IMAGE_DIR/base.raw" | cut -f1) used of $VM_DISK_SIZE, kernel $(cat "$VM_IMAGE_DIR/kernel-version")"
    vm_start "$arch" "$name" || return 1
    timeout=$([ "$(vm_accel "$name")" = kvm ] && echo 120 || echo 600)
    vm_wait_ssh "$name" "$timeout" || return 1
    echo "boot to ssh ($(vm_accel "$name")): $(cat "$(vm__dir "$name")/boot-to-ssh") s"
    local fs state
    fs=$(vm_ssh "$name" stat -fc %T /sys/fs/cgroup </dev/null)
    [ "$fs" = cgroup2fs ] || { vm_die "guest /sys/fs/cgroup is '$fs', not cgroup2fs"; return 1; }
    state=$(vm_ssh "$name" systemctl is-system-running --wait </dev/null) || true
    [ "$state" = running ] || { vm_ssh "$name" systemctl --failed </dev/null >&2; vm_die "guest systemd is '$state', not running"; return 1; }
    echo "guest: cgroup2fs, systemd $state; idle memory:"
    vm_ssh "$name" free -m </dev/null
    local t
    t=$(vm__now)
    vm_scp_to "$name" "$edged" /usr/local/bin/edged || return 1
    echo "scp edged ($(du -h "$edged" | cut -f1)): $(vm__since "$t") s"
    vm_ssh "$name" /usr/local/bin/edged --version </dev/null || { vm_die "edged --version failed in the guest"; return 1; }
    vm_reboot "$name" "$timeout" || return 1
    vm_ssh "$name" test -x /usr/local/bin/edged </dev/null || { vm_die "edged is gone after the reboot"; return 1; }
    vm_ssh "$name" sync </dev/null
    vm_poweroff_hard "$name" || return 1
    vm_restart "$name" || return 1
    vm_wait_ssh "$name" "$timeout" || return 1
    echo "after hard power-off: ssh up in $(cat "$(vm__dir "$name")/boot-to-ssh") s"
    vm_ssh "$name" /usr/local/bin/edged --version </dev/null || { vm_die "edged --version failed after the power-off"; return 1; }
    t=$(vm__now)
    vm_stop "$name"
    echo "clean poweroff: $(vm__since "$t") s; selftest $arch passed in $(vm__since "$t0") s"
}

# --- manual use --------------------------------------------------------------------------------------------
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    trap 'vm_cleanup_all' EXIT
    trap 'exit 130' INT TERM
    case "${1:-}" in
        image)
            vm_image "${2:?usage: $0 image x86_64|aarch64}"
            cat "$VM_IMAGE_DIR/versions" >&2
            echo "$VM_IMAGE_DIR" ;;
        boot)
            arch=${2:?usage: $0 boot x86_64|aarch64 [NAME]}
            name=${3:-manual-$arch}
            vm_start "$arch" "$name"
            vm_wait_ssh "$name" "$([ "$arch" = x86_64 ] && echo 120 || echo 600)"
            echo "ssh: $0 ssh $name   (or: ssh -p $(vm_port "$name") -i $(vm__dir "$name")/id_ed25519 root@127.0.0.1)"
            read -r -p "Enter powers the VM off. " _ || true
            vm_stop "$name" ;;
        selftest)
            arch=${2:?usage: $0 selftest x86_64|aarch64}
            vm__selftest "$arch" ;;
        ssh)
            name=${2:?usage: $0 ssh NAME [cmd...]}; shift 2
            trap - EXIT
            vm_ssh "$name" "$@" ;;
        *) echo "usage: $0 image|boot ARCH [NAME] | ssh NAME [cmd...]" >&2; exit 2 ;;
    esac
fi
