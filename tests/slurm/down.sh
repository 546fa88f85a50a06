#!/usr/bin/env bash
# Stop the cluster that tests/slurm/up.sh started in STATE_DIR: cancel its jobs, then stop
# slurmd, slurmctld, slurmdbd, mariadbd and munged by the pids up.sh recorded (SIGTERM, then
# SIGKILL after a bounded wait). Safe to run twice or after a partial bring-up.
set -uo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
STATE="$(cd "$1" 2>/dev/null && pwd)" || exit 0
export SLURM_CONF="$STATE/etc/slurm.conf"

# alive NAME: the recorded pid still runs the daemon NAME (not a recycled pid).
alive() {
    local pid
    pid=$(cat "$STATE/pids/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$1"
}

if alive slurmctld; then
    jobs=$(squeue -h -o %i 2>/dev/null)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 40); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
fi

for name in slurmd slurmctld slurmdbd mariadbd munged; do
    alive "$name" || continue
    pid=$(cat "$STATE/pids/$name.pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do
        alive "$name" || break
        sleep 0.5
    done
    if alive "$name"; then
        echo "down.sh: $name ($pid) ignored SIGTERM, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$STATE/pids/$name.pid"
done
exit 0
