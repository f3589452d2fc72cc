#!/usr/bin/env bash
# Runs the cross-built binaries and checks real behaviour: the aarch64 ones under qemu-aarch64-static (called
# explicitly; binfmt_misc is not needed), the x86_64 ones natively.
#
#   cross/smoke.sh [aarch64|x86_64]        (default aarch64; run cross/build.sh first; needs root)
#
# Checks: every binary is a static ELF of the right machine and starts; edged-monitor answers with its usage;
# edged and edgectl --version exit 0;
# edged starts in standalone mode on temp dirs (state, run, manifests, logs, socket) with one static pod manifest;
# `edgectl status --json` answers over the socket with the documented fields and lists that pod; `edgectl status`
# prints the human screen; a second edged on the same socket is refused; edgectl says so clearly when no edged
# listens; edged exits 0 on SIGTERM and leaves no process behind.
# Checks that need edged features not built yet are reported as PENDING (set EDGED_SMOKE_STRICT=1 to fail them).
# The pod's image points at a closed loopback port, so no container starts (qemu-user cannot run one anyway) and
# nothing leaves the machine.
set -uo pipefail

ARCH=${1:-aarch64}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/cross/out/$ARCH
STRICT=${EDGED_SMOKE_STRICT:-0}
TIMEOUT=${EDGED_SMOKE_TIMEOUT:-60}

passed=0 failed=0 pending=0
ok() { passed=$((passed + 1)); echo "  ok       $*"; }
bad() { failed=$((failed + 1)); echo "  FAILED   $*"; }
later() {
    if [ "$STRICT" = 1 ]; then bad "$* (pending feature; EDGED_SMOKE_STRICT=1)"; else pending=$((pending + 1)); echo "  PENDING  $*"; fi
}

case "$ARCH" in
    aarch64)
        QEMU=$(command -v qemu-aarch64-static || true)
        if [ -z "$QEMU" ]; then
            echo "smoke: installing qemu-user-static" >&2
            apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null
            QEMU=$(command -v qemu-aarch64-static) || { echo "smoke: no qemu-aarch64-static" >&2; exit 1; }
        fi
        RUN=("$QEMU")
        MACHINE=AArch64 ;;
    x86_64) RUN=(); MACHINE='X86-64|x86-64' ;;
    *) echo "usage: $0 [aarch64|x86_64]" >&2; exit 2 ;;
esac
for p in edged edgectl edged-monitor; do
    [ -x "$BIN/$p" ] || { echo "smoke: $BIN/$p missing; run cross/build.sh first" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/edged-smoke.XXXXXX)
NAME=smoke-$$
EDGED_PID=
cleanup() {
    if [ -n "$EDGED_PID" ] && kill -0 "$EDGED_PID" 2>/dev/null; then
        kill -KILL "$EDGED_PID" 2>/dev/null; wait "$EDGED_PID" 2>/dev/null
    fi
    # Cgroups edged may have made under its test-only root.
    find /sys/fs/cgroup -depth -type d -name "edged-$NAME*" -exec rmdir {} + 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

edgectl() { "${RUN[@]}" "$BIN/edgectl" "$@"; }
# Checks the status JSON on stdin: prints "ok" or the problems, then the pod names (python3 is on every CI machine).
json_check() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
problems = []
if not isinstance(d.get("healthy"), bool): problems.append("healthy is not a bool")
if not isinstance(d.get("reasons"), list): problems.append("reasons is not a list")
if d.get("mode") != "standalone": problems.append("mode is %r, not standalone" % d.get("mode"))
if not isinstance(d.get("version"), str) or not d.get("version"): problems.append("no version")
pods = d.get("pods")
if not isinstance(pods, list): problems.append("pods is not a list")
else:
    for p in pods:
        for k in ("namespace", "name", "phase", "restarts", "containers"):
            if k not in p: problems.append("pod %r lacks %s" % (p.get("name"), k))
print("; ".join(problems) if problems else "ok")
print(" ".join(p.get("name", "") for p in (pods or [])))
'
}

echo "smoke: $ARCH binaries in $BIN${RUN:+ under ${RUN[*]}}"

# 1. Static ELF of the right machine, each one starts.
for p in edged edgectl edged-monitor; do
    f=$BIN/$p
    if LC_ALL=C readelf -h "$f" 2>/dev/null | grep -qE "Machine: .*($MACHINE)" \
        && ! LC_ALL=C readelf -l "$f" | grep -q INTERP; then
        ok "$p is a static $ARCH executable ($(stat -c %s "$f") bytes)"
    else
        bad "$p is not a static $ARCH executable"
    fi
done
out=$("${RUN[@]}" "$BIN/edged-monitor" 2>&1); rc=$?
if [ "$rc" != 0 ] && grep -q 'usage: edged-monitor' <<<"$out"; then
    ok "edged-monitor without arguments prints its usage and fails (rc $rc)"
else
    bad "edged-monitor without arguments: rc $rc, output: $out"
fi

# Both Swift binaries get through their start-up and exit cleanly (a crash here, e.g. in the unwinding of the
# main thread that dispatch_main does, shows as an rc of 128+signal).
for p in edged edgectl; do
    out=$("${RUN[@]}" "$BIN/$p" --version 2>&1); rc=$?
    if [ "$rc" = 0 ] && [ -n "$out" ]; then ok "$p --version prints $out"; else bad "$p --version: rc $rc, output: $out"; fi
done

# The tunnel server (cloud side of the tunnel): refuses a missing certificate with the flag's name, and with a
# throw-away CA and certificate it listens for agents and on its CONNECT socket, then exits 0 on SIGTERM.
out=$("${RUN[@]}" "$BIN/edged" tunnel-server --cluster-cert /nonexistent.crt --cluster-key x --cluster-ca-cert y --uds-name "$TMP/t.sock" 2>&1); rc=$?
if [ "$rc" != 0 ] && grep -q -- '--cluster-cert /nonexistent.crt' <<<"$out"; then ok "tunnel-server names the unreadable --cluster-cert (rc $rc)"; else bad "tunnel-server with a missing cert: rc $rc, output: $out"; fi
if command -v openssl >/dev/null; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=smoke-ca \
        -keyout "$TMP/tca.key" -out "$TMP/tca.crt" >/dev/null 2>&1
    "${RUN[@]}" "$BIN/edged" tunnel-server --agent-bind-address 127.0.0.1 --agent-port 0 --cluster-cert "$TMP/tca.crt" \
        --cluster-key "$TMP/tca.key" --cluster-ca-cert "$TMP/tca.crt" --uds-name "$TMP/t.sock" >"$TMP/tunnel.log" 2>&1 &
    tpid=$!
    for _ in $(seq 1 100); do grep -q "tunnel server listening" "$TMP/tunnel.log" && break; sleep 0.2; done
    if grep -q "tunnel server listening" "$TMP/tunnel.log" && [ -S "$TMP/t.sock" ]; then ok "tunnel-server listens (agents over TLS, CONNECT socket)"; else bad "tunnel-server did not start: $(tail -n 5 "$TMP/tunnel.log")"; fi
    kill -TERM "$tpid" 2>/dev/null; wait "$tpid"; trc=$?
    if [ "$trc" = 0 ]; then ok "tunnel-server exited 0 on SIGTERM"; else bad "tunnel-server exited $trc on SIGTERM: $(tail -n 5 "$TMP/tunnel.log")"; fi
fi

# 2. The daemon, once edged has its flags.
help=$("${RUN[@]}" "$BIN/edged" --help 2>&1; "${RUN[@]}" "$BIN/edged" help run 2>&1)
missing=()
for flag in --state-dir --manifest-dir --socket; do grep -q -- "$flag" <<<"$help" || missing+=("$flag"); done
ctlhelp=$(edgectl --help 2>&1; edgectl status --help 2>&1)
for flag in --socket --json; do grep -q -- "$flag" <<<"$ctlhelp" || missing+=("edgectl $flag"); done
if [ ${#missing[@]} -gt 0 ]; then
    later "edged standalone start, edgectl status --json over the socket, SIGTERM exit: binaries lack ${missing[*]}"
else
    mkdir -p "$TMP/state/images/import" "$TMP/run" "$TMP/manifests" "$TMP/logs"
    echo "# smoke test: all defaults, flags override" >"$TMP/config.yaml"
    SOCK=$TMP/run/edged.sock
    cat >"$TMP/manifests/smoke.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  namespace: default
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: 127.0.0.1:1/edged-smoke/none:1
      imagePullPolicy: IfNotPresent
      command: ["/bin/true"]
EOF
    args=(--config "$TMP/config.yaml" --state-dir "$TMP/state" --run-dir "$TMP/run" --manifest-dir "$TMP/manifests"
          --log-dir "$TMP/logs" --socket "$SOCK" --node-name "$NAME" --cgroup-root "edged-$NAME" --log-level debug)
    env -u NOTIFY_SOCKET -u JOURNAL_STREAM "${RUN[@]}" "$BIN/edged" "${args[@]}" >"$TMP/edged.log" 2>&1 </dev/null &
    EDGED_PID=$!
    status_json= rc=
    start=$SECONDS
    while [ $((SECONDS - start)) -lt "$TIMEOUT" ] && kill -0 "$EDGED_PID" 2>/dev/null; do
        status_json=$(edgectl status --json --socket "$SOCK" 2>/dev/null); rc=$?
        if [ "$rc" = 0 ] || [ "$rc" = 1 ]; then
            [ -n "$status_json" ] && grep -q '"smoke' <<<"$status_json" && break
        fi
        sleep 0.5
    done
    if ! kill -0 "$EDGED_PID" 2>/dev/null; then
        wait "$EDGED_PID"; bad "edged exited at start with $?; its log:"; sed 's/^/    /' "$TMP/edged.log" | tail -n 30
        EDGED_PID=
    elif [ "$rc" != 0 ] && [ "$rc" != 1 ]; then
        bad "edgectl status --json did not answer within ${TIMEOUT}s (rc $rc); edged log:"; sed 's/^/    /' "$TMP/edged.log" | tail -n 30
    else
        ok "edged started standalone; edgectl status --json answered over $SOCK in $((SECONDS - start))s (rc $rc)"
        { read -r problems; read -r pods; } < <(json_check <<<"$status_json" 2>&1)
        if [ "$problems" = ok ]; then ok "status JSON has healthy, reasons, mode=standalone, version, pods"; else bad "status JSON: $problems: $status_json"; fi
        if grep -qw -- "smoke[^ ]*" <<<"$pods"; then ok "status lists the static pod from the manifest dir ($pods)"; else bad "status pods lack 'smoke': '$pods'"; fi
        human=$(edgectl status --socket "$SOCK" 2>&1); hrc=$?
        if { [ "$hrc" = 0 ] || [ "$hrc" = 1 ]; } && grep -q smoke <<<"$human"; then
            ok "edgectl status prints the human screen (rc $hrc)"
        else
            bad "edgectl status: rc $hrc: $human"
        fi
        second=$(env -u NOTIFY_SOCKET timeout 30 "${RUN[@]}" "$BIN/edged" "${args[@]}" 2>&1 </dev/null); src=$?
        if [ "$src" != 0 ] && [ "$src" != 124 ] && grep -qiE 'already|running' <<<"$second"; then
            ok "a second edged on the same socket is refused (rc $src)"
        else
            bad "a second edged on the same socket: rc $src: $(tail -n 3 <<<"$second")"
        fi
        kill -TERM "$EDGED_PID"
        start=$SECONDS
        while kill -0 "$EDGED_PID" 2>/dev/null && [ $((SECONDS - start)) -lt 30 ]; do sleep 0.2; done
        if kill -0 "$EDGED_PID" 2>/dev/null; then
            bad "edged still runs 30 s after SIGTERM"
        else
            wait "$EDGED_PID"; erc=$?
            if [ "$erc" = 0 ]; then ok "edged exited 0 on SIGTERM in $((SECONDS - start))s"; else bad "edged exited $erc on SIGTERM; log:"; tail -n 20 "$TMP/edged.log" | sed 's/^/    /'; fi
            EDGED_PID=
        fi
        left=$(pgrep -f -- "--node-name $NAME" || true)
        if [ -z "$left" ]; then ok "no edged process left behind"; else bad "processes left behind: $left"; fi
    fi
    down=$(edgectl status --json --socket "$SOCK" 2>&1); drc=$?
    if [ "$drc" != 0 ] && grep -qiE 'not running|no edged|cannot connect|connect' <<<"$down"; then
        ok "edgectl says clearly that edged is not running (rc $drc)"
    else
        bad "edgectl with no edged listening: rc $drc: $down"
    fi
fi

echo "smoke ($ARCH): $passed checks ok, $failed failing, $pending pending"
[ "$failed" = 0 ]
