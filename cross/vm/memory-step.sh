#!/bin/bash
# Runs in the gateway VM (copied there by cross/gateway-vm.sh, step 21 "memory limit"): watches edged for one step
# of a memory limit and prints what it saw as KEY=VALUE words on one line; the host judges them. One ssh session
# per step, the sampling done here, so the checks cost the guest a few forks a second and no ssh handshakes.
#
#   memory-step.sh sample SECONDS [PREFIX] [PODS]   every ~1 s for SECONDS: edged's MainPID (and its start time) the
#                                                   same, memory.events oom_kill of edged.service and of its
#                                                   supervisor/ leaf, memory.current of both, `edgectl status`
#                                                   timed, PODS (default 20) pods named PREFIX* (default gw-many-)
#                                                   Running in `edgectl pods`; once, 2 s in: a churn static pod
#                                                   (gw-churn) written → Running, removed → gone, each timed. At the
#                                                   end: edged's smaps_rollup (Pss, Anonymous, Rss) and major faults.
#   memory-step.sh charge                           supervisor/'s file_mapped and edged's RssFile (KB)
#   memory-step.sh readahead [KB]                   prints read_ahead_kb of the disk holding /usr/bin/edged; sets
#                                                   it to KB when given
#
# Words printed by `sample` (times in ms, memory in KB unless the name says otherwise):
#   pid, pid_lost (1: edged's pid vanished or was reused), mainpid_end, secs, samples, majflt, majflt_per_s,
#   unit_oom, sup_oom (oom_kill increase), unit_max_events, sup_max_events (memory.events "max" increase: how often
#   the limit was hit), unit_kb/sup_kb (memory.current at the end), unit_seen_kb/sup_seen_kb (highest sample),
#   status_max_ms, status_bad (runs that failed: exit other than 0 or 1 (DEGRADED), or no answer in 5 s),
#   running_min, churn_run_ms, churn_gone_ms (-1: not within 10 s), pss_kb, anon_kb, rss_kb, sup_file_mapped_kb,
#   sup_anon_kb, sup_file_kb.
set -u
export LC_ALL=C
# The paths can be changed for a test of this script without a VM.
UNIT=${MEMSTEP_UNIT:-/sys/fs/cgroup/system.slice/edged.service}
SUP=$UNIT/supervisor
MANIFESTS=${MEMSTEP_MANIFESTS:-/etc/edged/manifests}

ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
# stat_of PID → "majflt starttime" (fields 12 and 22 of /proc/PID/stat; the command name may hold spaces).
stat_of() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo "${10} ${20}"
}
# event FILE KEY → the counter KEY of a memory.events file (0 when missing).
event() {
    local k v
    while read -r k v; do [ "$k" = "$2" ] && { echo "$v"; return; }; done <"$1"
    echo 0
}
kb() { local v; read -r v <"$1"; echo $(( v / 1024 )); }

churn() {
    local t0 t
    sleep 2
    cat >"$MANIFESTS/.gw-churn.tmp" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: gw-churn
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: edged.local/demo/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
EOF
    t0=$(ms)
    mv "$MANIFESTS/.gw-churn.tmp" "$MANIFESTS/gw-churn.yaml"
    t=-1
    while [ $(( $(ms) - t0 )) -lt 10000 ]; do
        if edgectl pods 2>/dev/null | grep -q '^default  *gw-churn-.* Running'; then t=$(( $(ms) - t0 )); break; fi
        sleep 0.1
    done
    echo "churn_run_ms=$t"
    t0=$(ms)
    rm -f "$MANIFESTS/gw-churn.yaml"
    t=-1
    while [ $(( $(ms) - t0 )) -lt 10000 ]; do
        if ! edgectl pods 2>/dev/null | grep -q ' gw-churn-'; then t=$(( $(ms) - t0 )); break; fi
        sleep 0.1
    done
    echo "churn_gone_ms=$t"
}

sample() {
    local secs=$1 prefix=${2:-gw-many-} want=${3:-20}
    local pid start majflt0 st t0 end now out rc dt n
    pid=$(systemctl show -p MainPID --value edged)
    st=$(stat_of "$pid") || { echo "pid=$pid pid_lost=1 error=no-edged"; return 1; }
    majflt0=${st% *} start=${st#* }
    local unit_oom0 sup_oom0 unit_max0 sup_max0
    unit_oom0=$(event "$UNIT"/memory.events oom_kill) sup_oom0=$(event "$SUP"/memory.events oom_kill)
    unit_max0=$(event "$UNIT"/memory.events max) sup_max0=$(event "$SUP"/memory.events max)
    local pid_lost=0 samples=0 status_max=0 status_bad=0 running_min=$want unit_seen=0 sup_seen=0 majflt=$majflt0
    local churn_out
    churn_out=$(mktemp)
    churn >"$churn_out" 2>&1 &
    local churn_pid=$!
    t0=$(ms)
    end=$(( t0 + secs * 1000 ))
    while :; do
        now=$(ms)
        [ "$now" -lt "$end" ] || break
        samples=$((samples + 1))
        if st=$(stat_of "$pid") && [ "${st#* }" = "$start" ]; then majflt=${st% *}; else pid_lost=1; fi
        n=$(kb "$UNIT"/memory.current); [ "$n" -gt "$unit_seen" ] && unit_seen=$n
        n=$(kb "$SUP"/memory.current); [ "$n" -gt "$sup_seen" ] && sup_seen=$n
        now=$(ms)
        timeout 5 edgectl status >/dev/null 2>&1
        rc=$?
        dt=$(( $(ms) - now ))
        [ "$dt" -gt "$status_max" ] && status_max=$dt
        [ "$rc" -le 1 ] || status_bad=$((status_bad + 1))
        out=$(timeout 5 edgectl pods 2>/dev/null)
        n=$(grep -c "^default  *$prefix.* Running" <<<"$out")
        [ "$n" -lt "$running_min" ] && running_min=$n
        sleep 1
    done
    wait "$churn_pid"
    local took=$(( $(ms) - t0 ))
    local rss=0 pss=0 anon=0 k v _
    [ -r "/proc/$pid/smaps_rollup" ] && while read -r k v _; do
        case $k in Rss:) rss=$v ;; Pss:) pss=$v ;; Anonymous:) anon=$v ;; esac
    done <"/proc/$pid/smaps_rollup"
    local fm=0 sa=0 sf=0
    while read -r k v; do
        case $k in file_mapped) fm=$((v / 1024)) ;; anon) sa=$((v / 1024)) ;; file) sf=$((v / 1024)) ;; esac
    done <"$SUP"/memory.stat
    echo "pid=$pid pid_lost=$pid_lost mainpid_end=$(systemctl show -p MainPID --value edged)" \
        "secs=$(( took / 1000 )) samples=$samples majflt=$(( majflt - majflt0 ))" \
        "majflt_per_s=$(awk -v d=$(( majflt - majflt0 )) -v t="$took" 'BEGIN { printf "%.2f", d * 1000 / (t > 0 ? t : 1) }')" \
        "unit_oom=$(( $(event "$UNIT"/memory.events oom_kill) - unit_oom0 )) sup_oom=$(( $(event "$SUP"/memory.events oom_kill) - sup_oom0 ))" \
        "unit_max_events=$(( $(event "$UNIT"/memory.events max) - unit_max0 )) sup_max_events=$(( $(event "$SUP"/memory.events max) - sup_max0 ))" \
        "unit_kb=$(kb "$UNIT"/memory.current) sup_kb=$(kb "$SUP"/memory.current) unit_seen_kb=$unit_seen sup_seen_kb=$sup_seen" \
        "status_max_ms=$status_max status_bad=$status_bad running_min=$running_min" \
        "$(tr '\n' ' ' <"$churn_out")pss_kb=$pss anon_kb=$anon rss_kb=$rss sup_file_mapped_kb=$fm sup_anon_kb=$sa sup_file_kb=$sf"
    rm -f "$churn_out"
}

readahead() {
    local d q
    d=$(stat -Lc '%Hd:%Ld' /usr/bin/edged) || return 1
    q=/sys/dev/block/$d/queue
    [ -d "$q" ] || q=/sys/dev/block/$d/../queue
    [ -f "$q/read_ahead_kb" ] || { echo "no read_ahead_kb for the disk $d of /usr/bin/edged" >&2; return 1; }
    cat "$q/read_ahead_kb"
    [ -z "${1:-}" ] || echo "$1" >"$q/read_ahead_kb"
}

# charge → "FILE_MAPPED_KB RSSFILE_KB": the file pages charged to supervisor/ and mapped there, and edged's own
# file-backed RSS. Much less of the first than of the second means another process (apt, writing the binary) read
# edged's code first and it is charged to that process's cgroup, not to the limit.
charge() {
    local pid k v fm=0 rf=0 _
    pid=$(systemctl show -p MainPID --value edged)
    while read -r k v; do [ "$k" = file_mapped ] && fm=$((v / 1024)); done <"$SUP/memory.stat"
    while read -r k v _; do [ "$k" = RssFile: ] && rf=$v; done <"/proc/$pid/status"
    echo "$fm $rf"
}

case ${1:-} in
    sample) shift; sample "$@" ;;
    charge) charge ;;
    readahead) shift; readahead "$@" ;;
    *) echo "usage: $0 sample SECONDS [PREFIX] [PODS] | readahead [KB] | charge" >&2; exit 2 ;;
esac
