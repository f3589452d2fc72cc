#!/bin/bash
# Tests of step 21 (cross/gateway-vm.sh step_memory, cross/vm/memory-step.sh) without a VM, ~30 s, no root:
#  - memory-step.sh sample against a fake cgroup tree, stub systemctl/edgectl and a real process as "edged": the
#    figures it prints, a vanished edged (pid_lost=1), failing `edgectl status` runs (status_bad);
#  - step_memory with a fake guest (the g/gt functions): every limit passing, a lower limit failing (reported, the
#    step passes), the guard failing (the step fails), a limit not in force, bad EDGED_VM_MEMORY_STEPS, limits not
#    restored.
#   bash cross/vm/memory-step-test.sh
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1 ($2)"; fails=$((fails + 1)); fi; }

# --- memory-step.sh sample --------------------------------------------------------------------------------------
mkdir -p "$T/bin" "$T/unit/supervisor" "$T/man"
cat >"$T/bin/systemctl" <<EOF
#!/bin/sh
cat $T/pid
EOF
cat >"$T/bin/edgectl" <<EOF
#!/bin/bash
case \$1 in
status) sleep 0.1; exit \$(cat $T/status_rc) ;;
pods) for i in \$(seq -w 1 20); do echo "default  gw-many-\$i-host  1/1  Running  0"; done
      [ -f $T/man/gw-churn.yaml ] && echo "default  gw-churn-host  1/1  Running  0"; exit 0 ;;
esac
EOF
chmod +x "$T/bin/"*
for c in unit unit/supervisor; do
    echo 33554432 >"$T/$c/memory.current"
    printf 'low 0\nhigh 0\nmax 5\noom 0\noom_kill 0\n' >"$T/$c/memory.events"
done
printf 'anon 9437184\nfile 14680064\nfile_mapped 12582912\n' >"$T/unit/supervisor/memory.stat"
ms() { PATH=$T/bin:$PATH MEMSTEP_UNIT=$T/unit MEMSTEP_MANIFESTS=$T/man bash "$REPO/cross/vm/memory-step.sh" "$@"; }

sleep 60 & echo $! >"$T/pid"; echo 1 >"$T/status_rc"
out=$(ms sample 4)
kill "$(cat "$T/pid")" 2>/dev/null
echo "  $out"
check "sample: edged seen throughout" '[[ " $out " == *" pid_lost=0 "* ]]'
check "sample: exit 1 (DEGRADED) is an answer" '[[ " $out " == *" status_bad=0 "* ]]'
check "sample: 20 pods Running" '[[ " $out " == *" running_min=20 "* ]]'
check "sample: churn pod Running and gone timed" '[[ $out =~ churn_run_ms=[0-9]+\ .*churn_gone_ms=[0-9]+ ]]'
check "sample: cgroup figures in KB" '[[ " $out " == *" sup_kb=32768 "* && " $out " == *" sup_file_mapped_kb=12288 "* ]]'
check "sample: churn manifest removed" '[ ! -e "$T/man/gw-churn.yaml" ]'
sleep 1 & echo $! >"$T/pid"; echo 3 >"$T/status_rc"
out=$(ms sample 4)
check "sample: a vanished edged is pid_lost=1" '[[ " $out " == *" pid_lost=1 "* ]]'
check "sample: failing edgectl status runs are counted" '[[ ! " $out " == *" status_bad=0 "* ]]'
ms bogus >/dev/null 2>&1; check "memory-step.sh: unknown command exits 2" '[ $? = 2 ]'

# --- step_memory with a fake guest ------------------------------------------------------------------------------
run_fake() { # env for the fake, then prints the run's output
    (
        export EDGED_VM_RUN=$T/vmrun
        eval "$(sed -e "s#^REPO=.*#REPO=$REPO#" -e '/^# Development: run single steps/,$d' "$REPO/cross/gateway-vm.sh")"
        # shellcheck disable=SC2034  # read by run_step and g in the sourced script
        ARCH=x86_64 VM=fake
        g() {
            local c="$*"
            case $c in
                "echo "*" > "*"supervisor/memory.max;"*)
                    local v=${c#echo }; v=${v%% *}; echo $((v >> 20)) >"$T/curstep"
                    local M=${c#*MemoryMax=}; M=${M%%M*}; [ -n "${BADLIMIT:-}" ] && M=1; echo "$v $((M << 20))" ;;
                "bash /root/memory-step.sh readahead 128") echo 8192 ;;
                "bash /root/memory-step.sh readahead"*) echo 128 ;;
                "bash /root/memory-step.sh charge") echo "12000 12000" ;;
                *"supervisor/memory.current") echo 25000000 ;;
                *"edged.service/memory.current") echo 33000000 ;;
                *"memory.max") echo max ;;
                "systemctl show -p MemoryMax --value edged") echo "${FAKE_UMAX:-infinity}" ;;
                "systemctl show -p MainPID --value edged") echo 111 ;;
                "bash /root/memory-step.sh sample"*)
                    if [ "$(cat "$T/curstep")" = "${FAILAT:-0}" ]; then
                        echo "pid=111 pid_lost=0 mainpid_end=111 secs=30 samples=20 majflt=4000 majflt_per_s=133.30 unit_oom=0 sup_oom=0 unit_max_events=900 sup_max_events=880 unit_kb=30000 sup_kb=20400 unit_seen_kb=31000 sup_seen_kb=20480 status_max_ms=300 status_bad=0 running_min=20 churn_run_ms=900 churn_gone_ms=700 pss_kb=18000 anon_kb=8000 rss_kb=20000 sup_file_mapped_kb=9000 sup_anon_kb=9000 sup_file_kb=10000"
                    else
                        echo "pid=111 pid_lost=0 mainpid_end=111 secs=30 samples=20 majflt=4 majflt_per_s=0.13 unit_oom=0 sup_oom=0 unit_max_events=0 sup_max_events=3 unit_kb=40000 sup_kb=24000 unit_seen_kb=41000 sup_seen_kb=25000 status_max_ms=300 status_bad=0 running_min=20 churn_run_ms=900 churn_gone_ms=700 pss_kb=22000 anon_kb=8000 rss_kb=25000 sup_file_mapped_kb=12000 sup_anon_kb=9000 sup_file_kb=14000"
                    fi ;;
                *) : ;;
            esac
        }
        gt() { shift; g "$@"; }
        tmo() { echo "$1"; }
        vm_scp_to() { :; }
        many_running() { return 0; }
        mkdir -p "$EDGED_VM_RUN"
        run_step 21 "memory limit, 20 pods" step_memory
        summary
    ) 2>&1
}
out=$(run_fake)
check "all limits pass: PASS, min 20" '[[ $out == *"PASS in"*"min 20 MiB edged+monitors, MemoryMax=32M with 20 pods"* ]]'
check "all limits pass: restored" '[[ $out == *"restored: supervisor/memory.max max, edged.service MemoryMax=infinity, read_ahead_kb 8192"* ]]'
out=$(FAILAT=24 run_fake)
check "24 fails: the step passes, min 32" '[[ $out == *"PASS in"*"24 fail (edged'"'"'s major page faults 133.30/s"*"min 32 MiB"* ]]'
check "24 fails: 20 is not tried" '[[ $out != *"supervisor/memory.max 20 MiB"* ]]'
check "24 fails: the table is printed after the summary" '[[ ${out##*gateway VM summary} == *"| 24 MiB | 36M | **fail**"* ]]'
out=$(FAILAT=48 run_fake)
check "the guard fails: FAIL" '[[ $out == *"FAIL [x86_64] step 21"*"expected edged healthy with supervisor/memory.max 48 MiB (the guard)"* ]]'
out=$(BADLIMIT=1 run_fake)
check "a limit not in force fails" '[[ $out == *"FAIL [x86_64] step 21"*"the limits were not in force"* ]]'
out=$(EDGED_VM_MEMORY_STEPS="48 64" run_fake)
check "steps must go down" '[[ $out == *"FAIL [x86_64] step 21"*"each lower than the last"* ]]'
out=$(EDGED_VM_MEMORY_STEP_SECONDS=5 run_fake)
check "step seconds at least 10" '[[ $out == *"FAIL [x86_64] step 21"*"EDGED_VM_MEMORY_STEP_SECONDS to be 10 or more"* ]]'
out=$(FAKE_UMAX=50M run_fake)
check "limits not restored fail" '[[ $out == *"FAIL [x86_64] step 21"*"expected supervisor/memory.max max and MemoryMax=infinity after the step, saw max and 50M"* ]]'

echo "$fails failed"
[ "$fails" = 0 ]
