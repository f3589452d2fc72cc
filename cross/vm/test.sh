#!/usr/bin/env bash
# Error paths of cross/vm/lib.sh, without waiting for a guest to boot (about a minute; needs root and the
# cached x86_64 image, which it builds when missing). The happy path is `cross/vm/lib.sh selftest ARCH`.
#
#   bash cross/vm/test.sh
set -uo pipefail
export EDGED_VM_RUN=${EDGED_VM_RUN:-/tmp/edged-vm-test.$$}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'vm_cleanup_all; rm -rf "$EDGED_VM_RUN"' EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
# expect_fail NAME PATTERN cmd...: the command fails and its stderr matches PATTERN.
expect_fail() {
    local name=$1 pattern=$2; shift 2
    local err rc=0
    err=$("$@" 2>&1 >/dev/null) || rc=$?
    if [ $rc = 0 ]; then bad "$name: succeeded, expected a failure"; return; fi
    if grep -qE "$pattern" <<<"$err"; then ok "$name"; else bad "$name: message '$err' lacks /$pattern/"; fi
}

expect_fail "unknown architecture is refused" "unknown architecture 'sparc': use x86_64 or aarch64" vm_image sparc

empty=$EDGED_VM_RUN/not-an-image
mkdir -p "$empty" && truncate -s 1M "$empty/base.raw"
expect_fail "a disk outside an image folder is refused" "vmlinuz missing: a disk for vm_start must sit in an image folder" \
    vm_start x86_64 t-nodisk "$empty/base.raw"

vm_image x86_64 2>/dev/null || { bad "x86_64 image"; exit 1; }
img=$VM_IMAGE_DIR

# qemu that cannot start (a kernel file it cannot load): the error carries qemu's own message.
broken=$EDGED_VM_RUN/broken-image
mkdir -p "$broken" && cp "$img/id_ed25519" "$img/initrd.img" "$broken/" && truncate -s 4k "$broken/vmlinuz"
ln -s "$img/base.raw" "$broken/base.raw"
expect_fail "qemu failing to start is reported with its message" "qemu did not start for VM t-broken: qemu.*kernel" \
    vm_start x86_64 t-broken "$broken/base.raw"

vm_start x86_64 t-run >/dev/null 2>&1 && vm_running t-run && ok "vm_start runs qemu" || bad "vm_start runs qemu"
expect_fail "a second VM of the same name is refused" "VM t-run is already running" vm_start x86_64 t-run
expect_fail "vm_restart of a running VM is refused" "VM t-run is still running" vm_restart t-run
expect_fail "no ssh within the timeout is reported with the serial log" "VM t-run: no ssh within 2 s \(serial log above" \
    vm_wait_ssh t-run 2
for _ in $(seq 60); do [ -s "$(vm_serial_log t-run)" ] && break; sleep 1; done   # TCG on a loaded host: seconds
[ -s "$(vm_serial_log t-run)" ] && ok "the serial console is logged" || bad "serial log still empty after 60 s: $(vm_serial_log t-run)"
[ "$(echo "info status" | socat - "UNIX-CONNECT:$EDGED_VM_RUN/t-run/monitor.sock" | grep -c 'VM status: running')" = 1 ] \
    && ok "the qemu monitor answers on its socket" || bad "the qemu monitor does not answer"

# qemu dying under vm_wait_ssh (killed here; it stays a zombie where PID 1 does not reap): reported at once.
kill -9 "$(cat "$EDGED_VM_RUN/t-run/qemu.pid")"
sleep 1
vm_running t-run && bad "vm_running after kill -9" || ok "vm_running is false for a killed (zombie) qemu"
start=$(date +%s)
expect_fail "qemu exiting while waiting for ssh is reported" "VM t-run: qemu exited while waiting for ssh" vm_wait_ssh t-run 60
[ $(( $(date +%s) - start )) -lt 10 ] && ok "... without waiting for the timeout" || bad "vm_wait_ssh waited for the timeout"

# Restart on the same overlay, then a hard power-off through the monitor.
vm_restart t-run >/dev/null 2>&1 && vm_running t-run && ok "vm_restart boots the same overlay again" || bad "vm_restart"
pid=$(cat "$EDGED_VM_RUN/t-run/qemu.pid")
out=$(vm_poweroff_hard t-run 2>&1)
! vm_running t-run && grep -q "powered off hard" <<<"$out" && ! grep -q "kill -9" <<<"$out" \
    && ok "vm_poweroff_hard stops qemu through the monitor" || bad "vm_poweroff_hard: $out"
[ -f "$EDGED_VM_RUN/t-run/serial.log.1" ] && ok "the previous boot's serial log is kept" || bad "serial.log.1 missing"
vm_poweroff_hard t-run >/dev/null 2>&1 && ok "vm_poweroff_hard of a stopped VM is a no-op" || bad "vm_poweroff_hard twice"
vm_stop t-run && [ ! -d "$EDGED_VM_RUN/t-run" ] && ok "vm_stop removes the run folder" || bad "vm_stop"

# No qemu outlives a script that sources lib.sh, whatever its own EXIT trap does.
bash -c 'source "$1"; trap "echo own-trap" EXIT; vm_start x86_64 t-trap >/dev/null 2>&1; cat "$EDGED_VM_RUN/t-trap/qemu.pid" >"$EDGED_VM_RUN/trap.pid"; exit 3' \
    _ "$(dirname "${BASH_SOURCE[0]}")/lib.sh" >/dev/null 2>&1
sleep 5; p=$(cat "$EDGED_VM_RUN/trap.pid" 2>/dev/null)
if [ -n "$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || echo gone)" != S ] \
    && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || echo gone)" != R ]; then
    ok "qemu is stopped when the sourcing script exits (even with its own EXIT trap set after sourcing)"
else
    bad "qemu $p survived the script that started it"; [ -n "$p" ] && kill -9 "$p"
fi

# binfmt_misc registration is idempotent.
vm__ensure_binfmt_aarch64 2>/dev/null && vm__ensure_binfmt_aarch64 2>/dev/null && grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    && ok "qemu-aarch64 binfmt registration (F flag) is idempotent" || bad "binfmt registration"

# The initrd made on the host: modules in dependency order, built-in ones skipped, unknown ones refused.
fr=$EDGED_VM_RUN/fakeroot; md=$fr/usr/lib/modules/9.9
mkdir -p "$md/kernel"
printf 'kernel/vblk.ko.xz: kernel/vcore.ko.xz\nkernel/vcore.ko.xz:\n' >"$md/modules.dep"
echo kernel/fs/ext4.ko >"$md/modules.builtin"
echo vcore-bytes | xz >"$md/kernel/vcore.ko.xz"; echo vblk-bytes | xz >"$md/kernel/vblk.ko.xz"
cp /bin/true "$EDGED_VM_RUN/busybox"
if (VM_INITRD_MODULES="vblk ext4"; vm__make_initrd "$fr" 9.9 "$EDGED_VM_RUN/busybox" "$EDGED_VM_RUN/i.img" "$EDGED_VM_RUN/i.d") 2>/dev/null \
    && [ "$(cat "$EDGED_VM_RUN/i.d/lib/modules/order")" = "$(printf '1.ko vcore.ko.xz\n2.ko vblk.ko.xz')" ] \
    && [ "$(cat "$EDGED_VM_RUN/i.d/lib/modules/1.ko")" = vcore-bytes ] \
    && zcat "$EDGED_VM_RUN/i.img" | cpio -t --quiet 2>/dev/null | grep -qx init; then
    ok "the initrd loads a module's dependencies first (decompressed), skips built-in ones, has /init"
else
    bad "initrd module order: $(cat "$EDGED_VM_RUN/i.d/lib/modules/order" 2>&1)"
fi
expect_fail "an initrd module the kernel lacks is refused" "module nosuch is neither in .*modules.dep nor built into kernel 9.9" \
    bash -c 'source "$1"; VM_INITRD_MODULES=nosuch; vm__make_initrd "$2" 9.9 "$3" "$4/x.img" "$4/x.d"' _ "$VM_LIB_DIR/lib.sh" "$fr" "$EDGED_VM_RUN/busybox" "$EDGED_VM_RUN"
zcat "$img/initrd.img" | cpio -t --quiet 2>/dev/null | grep -q '^lib/modules/[0-9]*\.ko$' && grep -q virtio_blk <(zcat "$img/initrd.img" | cpio -i --to-stdout --quiet lib/modules/order 2>/dev/null) \
    && ok "the cached image's initrd carries virtio_blk" || bad "the cached image's initrd lacks virtio_blk"
expect_fail "a package missing from the index is reported" "nosuch-pkg \(amd64\) is not in the cached trixie index" \
    vm__fetch_deb amd64 nosuch-pkg "$EDGED_VM_RUN"
expect_fail "a build without cpio says what to install" "cpio missing .*apt-get install cpio" \
    env PATH=/nonexistent /bin/bash -c 'source "$1" 2>/dev/null; VM_IMAGE_DIR=$2/never; vm__build_image x86_64 amd64 ""' _ "$VM_LIB_DIR/lib.sh" "$EDGED_VM_RUN"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
