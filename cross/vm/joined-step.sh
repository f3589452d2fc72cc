# Issue 16, step 8 "Joined": edged in a VM joins the test API server running on this host, a pod created through
# the API runs in the VM, and its status reaches the host (read with the real kubectl).
#
# Sourced by cross/gateway-vm.sh, which defines `vm_ssh NAME COMMAND...` (runs COMMAND as root in the guest) and,
# optionally, `vm_scp_to NAME SRC DST`. The guest reaches the host's 127.0.0.1 as 10.0.2.2 (qemu user-mode
# networking forwards it), so the server listens on 127.0.0.1 and its certificate also names 10.0.2.2.
#
#   joined_api_start DIR     edged-bench test-apiserver in the background (--san $JOINED_SERVER_HOST), waits for
#                            DIR/ready, exports EDGED_API_* from DIR/join.env (server URL, token, CA hash, kubeconfig)
#   joined_step VM           join → node Ready → pod Running, seen by kubectl on the host; then the pod is deleted
#                            and must be gone from the VM. Prints one line per stage with its time; returns non-zero
#                            with a "joined: FAIL ..." line saying what was expected and what was seen.
#   joined_api_stop          SIGTERM to the server, waits for it (also safe when it is not running)
#   joined_kubectl ARGS...   kubectl as the cluster admin of the test API server
#
# Environment (all optional):
#   EDGED_BENCH           the edged-bench binary (default: .build/debug/edged-bench, which .ci/run's
#                         `swift build --build-tests` makes, else .build/release/edged-bench)
#   JOINED_SERVER_HOST    the host the node joins (default 10.0.2.2)
#   JOINED_EDGECTL        the edgectl command in the VM (default "edgectl")
#   JOINED_IMAGE          the pod's image, already in the VM's edged (default edged.local/demo/busybox:1, the image
#                         `edged-bench test-apiserver --image-archive` and `edged demo` write)
#   JOINED_IMAGE_ARCHIVE  an image archive on this host to copy into the VM and import first (optional)
#   JOINED_TIMEOUT        seconds for each wait (default 90)
#   JOINED_CNI_DIR        the VM's CNI config dir (default /etc/cni/net.d, edged's cni.confDir). When it holds no
#                         config, the step writes a bridge network there (JOINED_CNI_BRIDGE, default edged0;
#                         JOINED_CNI_SUBNET, default 10.88.0.0/16) if the VM has the CNI plugins; without plugins it
#                         fails, since a node without a pod network is never Ready.
#
# Executed directly (`sudo bash cross/vm/joined-step.sh selftest`), it runs the same step against an edged started
# on this host on temp dirs, with `vm_ssh` running commands locally and the node joining https://127.0.0.1:PORT
# (the 10.0.2.2 name is checked on the serving certificate with openssl instead, as this host cannot route it).

JOINED_TIMEOUT=${JOINED_TIMEOUT:-90}
JOINED_SERVER_HOST=${JOINED_SERVER_HOST:-10.0.2.2}
JOINED_EDGECTL=${JOINED_EDGECTL:-edgectl}
JOINED_IMAGE=${JOINED_IMAGE:-edged.local/demo/busybox:1}
JOINED_POD=${JOINED_POD:-joined-busybox}
JOINED_CNI_DIR=${JOINED_CNI_DIR:-/etc/cni/net.d}
JOINED_CNI_BRIDGE=${JOINED_CNI_BRIDGE:-edged0}
JOINED_CNI_SUBNET=${JOINED_CNI_SUBNET:-10.88.0.0/16}
JOINED_API_PID=

joined_log() { echo "joined: $*"; }
# What a guest command's exit status says, for FAIL lines (124: coreutils timeout ended it).
joined_why() { [ "$1" = 124 ] && echo "no answer within $JOINED_TIMEOUT s (is edged up and serving its socket?)" || echo "exit $1"; }
joined_fail() { echo "joined: FAIL $*" >&2; return 1; }
joined_now() { date +%s.%N; }
joined_since() { awk -v a="$1" -v b="$(joined_now)" 'BEGIN { printf "%.1f s", b - a }'; }

joined_bench() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    if [ -n "${EDGED_BENCH:-}" ]; then echo "$EDGED_BENCH"
    elif [ -x "$root/.build/debug/edged-bench" ]; then echo "$root/.build/debug/edged-bench"
    elif [ -x "$root/.build/release/edged-bench" ]; then echo "$root/.build/release/edged-bench"
    else
        joined_fail "no edged-bench binary: build it with \`swift build --product edged-bench\` or set EDGED_BENCH"
    fi
}

joined_kubectl() { kubectl --kubeconfig "$EDGED_API_KUBECONFIG" "$@"; }

# joined_api_start DIR [extra test-apiserver args...]
joined_api_start() {
    local dir=$1; shift
    local bench t0
    bench=$(joined_bench) || return 1
    command -v kubectl >/dev/null || { joined_fail "kubectl is not installed on this host (it reads the pod status)"; return 1; }
    mkdir -p "$dir"
    t0=$(joined_now)
    "$bench" test-apiserver --listen 127.0.0.1:0 --san "$JOINED_SERVER_HOST" --out "$dir" "$@" >"$dir/apiserver.log" 2>&1 &
    JOINED_API_PID=$!
    local waited=0
    until [ -s "$dir/ready" ]; do
        if ! kill -0 "$JOINED_API_PID" 2>/dev/null; then
            wait "$JOINED_API_PID"; local rc=$?
            JOINED_API_PID=
            joined_fail "$bench test-apiserver exited (status $rc) before it was ready: $(tail -5 "$dir/apiserver.log")$([ "$rc" = 64 ] && echo " (an edged-bench older than test-apiserver? rebuild: swift build --product edged-bench)")"
            return 1
        fi
        if [ "$waited" -ge 300 ]; then
            joined_fail "the test API server did not write $dir/ready within 30 s: $(tail -5 "$dir/apiserver.log")"
            joined_api_stop
            return 1
        fi
        sleep 0.1; waited=$((waited + 1))
    done
    set -a; . "$dir/join.env"; set +a
    joined_log "test API server at $EDGED_API_SERVER (pid $JOINED_API_PID) ready in $(joined_since "$t0")"
}

joined_api_stop() {
    [ -n "$JOINED_API_PID" ] || return 0
    kill -TERM "$JOINED_API_PID" 2>/dev/null
    wait "$JOINED_API_PID" 2>/dev/null
    JOINED_API_PID=
}

# joined_wait WHAT COMMAND...: runs COMMAND every second until it succeeds or JOINED_TIMEOUT passes.
joined_wait() {
    local what=$1; shift
    local deadline=$((SECONDS + JOINED_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            joined_fail "$what: not seen within $JOINED_TIMEOUT s"
            return 1
        fi
        sleep 1
    done
}

joined_node_ready() {
    [ "$(joined_kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

joined_pod_running() {
    local phase ready
    phase=$(joined_kubectl get pod "$JOINED_POD" -o jsonpath='{.status.phase}')
    ready=$(joined_kubectl get pod "$JOINED_POD" -o jsonpath='{.status.containerStatuses[0].ready}')
    [ "$phase" = Running ] && [ "$ready" = true ]
}

joined_pod_gone_in_vm() {
    ! vm_ssh "$1" "timeout $JOINED_TIMEOUT $JOINED_EDGECTL pods" </dev/null | grep -q "$JOINED_POD"
}

# joined_step VM: the step itself (joined_api_start must have run).
joined_step() {
    local vm=$1 t0 t node out
    [ -n "${EDGED_API_SERVER:-}" ] || { joined_fail "no test API server: call joined_api_start first"; return 1; }
    declare -F vm_ssh >/dev/null || { joined_fail "vm_ssh is not defined: source cross/vm/lib.sh first"; return 1; }
    t0=$(joined_now)

    if [ -n "${JOINED_IMAGE_ARCHIVE:-}" ]; then
        t=$(joined_now)
        local remote=/tmp/joined-image.tar
        if declare -F vm_scp_to >/dev/null; then
            vm_scp_to "$vm" "$JOINED_IMAGE_ARCHIVE" "$remote" || { joined_fail "copying $JOINED_IMAGE_ARCHIVE into the VM"; return 1; }
        else
            vm_ssh "$vm" "cat > $remote" <"$JOINED_IMAGE_ARCHIVE" || { joined_fail "copying $JOINED_IMAGE_ARCHIVE into the VM"; return 1; }
        fi
        out=$(vm_ssh "$vm" "timeout $JOINED_TIMEOUT $JOINED_EDGECTL images import $remote; rc=\$?; rm -f $remote; exit \$rc" </dev/null 2>&1) || {
            joined_fail "edgectl images import in the VM, $(joined_why $?): $out"; return 1; }
        joined_log "image imported in $(joined_since "$t"): $out"
    fi
    out=$(vm_ssh "$vm" "timeout $JOINED_TIMEOUT $JOINED_EDGECTL images" </dev/null 2>&1) || {
        joined_fail "edgectl images in the VM, $(joined_why $?): $out"; return 1; }
    if ! grep -qF "$JOINED_IMAGE" <<<"$out"; then
        joined_fail "image $JOINED_IMAGE is not in the VM's edged (edgectl images: $out); import it first (JOINED_IMAGE_ARCHIVE) or set JOINED_IMAGE"
        return 1
    fi

    # A Ready node needs a pod network (kubelet's NetworkReady, as edged reports it): the VM's own CNI config, else a
    # bridge network written here when the VM has the plugins (Debian's containernetworking-plugins).
    out=$(vm_ssh "$vm" "ls $JOINED_CNI_DIR 2>/dev/null | grep -E '[.](conflist|conf|json)\$' | head -1" </dev/null)
    if [ -n "$out" ]; then
        joined_log "pod network: the VM's $JOINED_CNI_DIR/$out"
    elif vm_ssh "$vm" "test -x /usr/lib/cni/bridge -o -x /opt/cni/bin/bridge" </dev/null; then
        local ipam_dir=
        [ -z "${JOINED_CNI_IPAM_DIR:-}" ] || ipam_dir="\"dataDir\":\"$JOINED_CNI_IPAM_DIR\","
        vm_ssh "$vm" "mkdir -p $JOINED_CNI_DIR && cat > $JOINED_CNI_DIR/10-edged-joined.conflist" <<CNI || { joined_fail "writing a CNI config into the VM's $JOINED_CNI_DIR"; return 1; }
{"cniVersion":"1.0.0","name":"edged-joined","plugins":[
 {"type":"bridge","bridge":"$JOINED_CNI_BRIDGE","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local",$ipam_dir"ranges":[[{"subnet":"$JOINED_CNI_SUBNET"}]]}},
 {"type":"loopback"}]}
CNI
        joined_log "pod network: wrote $JOINED_CNI_DIR/10-edged-joined.conflist (bridge $JOINED_CNI_BRIDGE, $JOINED_CNI_SUBNET)"
    else
        joined_fail "the VM has no CNI config in $JOINED_CNI_DIR and no CNI plugins (/usr/lib/cni/bridge, /opt/cni/bin/bridge), so its node can never be Ready: put containernetworking-plugins in the VM image"
        return 1
    fi

    # 1. edgectl join in the VM, with the token and CA pin the server wrote.
    t=$(joined_now)
    out=$(vm_ssh "$vm" "timeout $JOINED_TIMEOUT $JOINED_EDGECTL join --server $EDGED_API_SERVER --token $EDGED_API_TOKEN --ca-cert-hash $EDGED_API_CA_CERT_HASH" </dev/null 2>&1) || {
        joined_fail "edgectl join --server $EDGED_API_SERVER in the VM, $(joined_why $?): $out"; return 1; }
    node=$(sed -n 's/^joined .* as node \([^ ]*\).*/\1/p; s/^already joined .* as node \([^ ;]*\).*/\1/p' <<<"$out" | head -1)
    [ -n "$node" ] || { joined_fail "edgectl join did not say which node it joined as: $out"; return 1; }
    joined_log "edgectl join: node $node in $(joined_since "$t")"

    # 2. The Node Ready, seen from the host.
    t=$(joined_now)
    joined_wait "node $node Ready=True on the API server" joined_node_ready "$node" || {
        joined_kubectl get node "$node" -o yaml 2>&1 | tail -30 >&2; return 1; }
    joined_log "node $node Ready in $(joined_since "$t")"

    # 3. A pod created through the API, bound to the node, Running with a ready container, seen from the host.
    t=$(joined_now)
    joined_kubectl delete pod "$JOINED_POD" --ignore-not-found --wait=false >/dev/null
    joined_kubectl create --validate=false -f - >/dev/null <<EOF || { joined_fail "kubectl create pod $JOINED_POD"; return 1; }
apiVersion: v1
kind: Pod
metadata: {name: $JOINED_POD, namespace: default}
spec:
  nodeName: $node
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: $JOINED_IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo joined-pod-started; sleep 3600"]
EOF
    joined_wait "pod $JOINED_POD Running with its container ready (kubectl on the host)" joined_pod_running || {
        joined_kubectl get pod "$JOINED_POD" -o yaml 2>&1 | sed -n '/^status:/,$p' >&2
        vm_ssh "$vm" "timeout $JOINED_TIMEOUT $JOINED_EDGECTL pods" </dev/null >&2; return 1; }
    local ips
    ips=$(joined_kubectl get pod "$JOINED_POD" -o jsonpath='hostIP {.status.hostIP}, podIP {.status.podIP}')
    joined_log "pod $JOINED_POD Running on $node ($ips) in $(joined_since "$t"), status read on the host"
    vm_ssh "$vm" "timeout $JOINED_TIMEOUT $JOINED_EDGECTL pods" </dev/null | grep -q "$JOINED_POD" || {
        joined_fail "kubectl says $JOINED_POD runs but edgectl pods in the VM does not list it"; return 1; }

    # 4. Deleting it through the API stops it in the VM.
    t=$(joined_now)
    joined_kubectl delete pod "$JOINED_POD" --wait=false >/dev/null || { joined_fail "kubectl delete pod $JOINED_POD"; return 1; }
    joined_wait "pod $JOINED_POD gone from edgectl pods in the VM after kubectl delete" joined_pod_gone_in_vm "$vm" || return 1
    joined_log "pod deleted through the API, gone in the VM in $(joined_since "$t")"
    joined_log "ok in $(joined_since "$t0")"
}

# ---- selftest: the same step against an edged on this host ----

joined_selftest_cleanup() {
    local tmp=$JOINED_SELFTEST_TMP
    joined_api_stop
    if [ -n "$JOINED_SELFTEST_EDGED" ]; then kill -TERM "$JOINED_SELFTEST_EDGED" 2>/dev/null; wait "$JOINED_SELFTEST_EDGED"; fi
    umount -l "$tmp/run/sandboxes" 2>/dev/null
    [ -n "${JOINED_CNI_BRIDGE:-}" ] && ip link del "$JOINED_CNI_BRIDGE" 2>/dev/null
    # edged's cgroups (--cgroup-root joined-selftest), deepest first; rmdir only.
    find /sys/fs/cgroup/*/joined-selftest /sys/fs/cgroup/joined-selftest -depth -type d -exec rmdir {} + 2>/dev/null
    rm -rf "$tmp"
}

joined_selftest() {
    set -u
    [ "$(id -u)" = 0 ] || { echo "selftest needs root (it starts edged and containers)" >&2; return 2; }
    local root bin tmp
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    bin=${EDGED_BIN_DIR:-$root/.build/debug}
    for b in edged edgectl edged-monitor; do
        [ -x "$bin/$b" ] || { echo "no $bin/$b: swift build --product $b (or set EDGED_BIN_DIR)" >&2; return 2; }
    done
    tmp=$(mktemp -d /tmp/joined-selftest.XXXXXX)
    JOINED_SELFTEST_TMP=$tmp JOINED_SELFTEST_EDGED=
    trap joined_selftest_cleanup EXIT

    # The 10.0.2.2 name on the serving certificate (what the VM verifies), then the node joins 127.0.0.1 here.
    joined_api_start "$tmp/api" --image-archive "$tmp/busybox.tar" || return 1
    echo | openssl s_client -connect "127.0.0.1:$EDGED_API_PORT" -CAfile "$tmp/api/ca.crt" \
        -verify_ip "$JOINED_SERVER_HOST" -verify_return_error >"$tmp/s_client.log" 2>&1 \
        || { joined_fail "the serving certificate does not verify for $JOINED_SERVER_HOST: $(grep -i verify "$tmp/s_client.log")"; return 1; }
    if echo | openssl s_client -connect "127.0.0.1:$EDGED_API_PORT" -CAfile "$tmp/api/ca.crt" \
        -verify_ip 10.0.2.3 -verify_return_error >/dev/null 2>&1; then
        joined_fail "the serving certificate verifies for 10.0.2.3 too: the SAN check proves nothing"; return 1
    fi
    joined_log "serving certificate verifies for $JOINED_SERVER_HOST (and not for 10.0.2.3)"
    EDGED_API_SERVER="https://127.0.0.1:$EDGED_API_PORT"

    local port1 port2
    port1=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    port2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$tmp/state/images/import" "$tmp/run" "$tmp/manifests" "$tmp/logs" "$tmp/net.d"
    JOINED_CNI_DIR=$tmp/net.d JOINED_CNI_IPAM_DIR=$tmp/ipam JOINED_CNI_SUBNET=10.213.$((RANDOM % 250)).0/24
    JOINED_CNI_BRIDGE=edj$(printf %x $RANDOM$RANDOM)
    cat >"$tmp/config.yaml" <<EOF
cluster:
  nodeIP: 127.0.0.1
cni:
  confDir: $tmp/net.d
  binDirs: [/usr/lib/cni]
hub:
  httpsAddress: ""
  httpAddress: 127.0.0.1:$port1
  healthAddress: 127.0.0.1:$port2
EOF
    "$bin/edged" --state-dir "$tmp/state" --run-dir "$tmp/run" --manifest-dir "$tmp/manifests" --log-dir "$tmp/logs" \
        --socket "$tmp/run/edged.sock" --node-name joined-selftest --cgroup-root joined-selftest \
        --config "$tmp/config.yaml" --stop-pods-on-exit >"$tmp/edged.log" 2>&1 &
    JOINED_SELFTEST_EDGED=$!
    JOINED_EDGECTL="$bin/edgectl --socket $tmp/run/edged.sock"
    vm_ssh() { shift; bash -c "$*"; }
    JOINED_IMAGE_ARCHIVE="$tmp/busybox.tar"
    local deadline=$((SECONDS + 30))
    until $JOINED_EDGECTL pods >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { joined_fail "edged did not answer on its socket within 30 s: $(tail -5 "$tmp/edged.log")"; return 1; }
        sleep 0.2
    done
    joined_step local || { echo "--- edged log:" >&2; tail -20 "$tmp/edged.log" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        selftest) joined_selftest ;;
        *) echo "usage: sudo bash $0 selftest    (or source it: see the comment at the top)" >&2; exit 2 ;;
    esac
fi
