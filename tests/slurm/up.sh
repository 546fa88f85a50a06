#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on localhost, without systemd and without writing to
# /etc: munged, mariadbd, slurmdbd, slurmctld and slurmd, each with its config, sockets,
# logs, pid files and state under STATE_DIR, ports on 127.0.0.1 only. Needs root and the
# Debian packages slurm-wlm, slurmdbd, munge and mariadb-server.
#
#   tests/slurm/up.sh STATE_DIR      # then: source STATE_DIR/env.sh; sinfo; sbatch ...
#   tests/slurm/down.sh STATE_DIR    # stops every daemon this script started
#
# Clients find the cluster through SLURM_CONF (written to STATE_DIR/env.sh). The node
# offers fake GPUs (gres type "fake"), one per device file in SLURM_TEST_GPU_DEVICES
# (default "/dev/tty0 /dev/tty1"): SLURM only needs distinct device files to count and
# assign GPUs (CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS); no CUDA device sits behind them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -eq 1 ]] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
mkdir -p "$1"
STATE="$(cd "$1" && pwd)"
NODE="$(hostname -s)"
CPUS="$(nproc)"
read -r -a GPU_DEVICES <<<"${SLURM_TEST_GPU_DEVICES:-/dev/tty0 /dev/tty1}"

# Exit 3: this host cannot run the test cluster (the test suite skips); exit 1: bring-up failed.
unsuitable() { echo "up.sh: $*" >&2; exit 3; }
fail() { echo "up.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || unsuitable "must run as root (slurmd launches jobs as the submitting user)"
for tool in munged mungekey mariadb-install-db mariadbd mariadb slurmdbd slurmctld slurmd sacctmgr scontrol sinfo srun python3; do
    command -v "$tool" >/dev/null || unsuitable "$tool not found: apt-get install slurm-wlm slurmdbd munge mariadb-server"
done
for dev in "${GPU_DEVICES[@]}"; do
    [[ -e $dev ]] || unsuitable "fake GPU device file $dev does not exist: set SLURM_TEST_GPU_DEVICES to existing ones"
done
# The daemons bind to the address the hostname resolves to (NoInAddrAny): keep it loopback.
HOST_ADDR="$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 {print $1}')"
[[ $HOST_ADDR == 127.* ]] || unsuitable "hostname $(hostname) resolves to ${HOST_ADDR:-nothing}, not a loopback address; the daemons would listen on it"

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.5 s, fail after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out waiting for $what (logs: $STATE/log)"
        sleep 0.5
    done
}

# start NAME COMMAND...: run a daemon that stays in the foreground (-D, --foreground) as a
# background process; its pid goes to pids/NAME.pid so down.sh stops exactly these.
start() {
    local name=$1
    shift
    "$@" >>"$STATE/log/$name.out" 2>&1 &
    echo $! >"$STATE/pids/$name.pid"
}

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

mkdir -p "$STATE"/{etc,munge,mysql,log,pids,run,spool/ctld,spool/d}
chmod 700 "$STATE/munge"
read -r CTLD_PORT SLURMD_PORT DBD_PORT MYSQL_PORT SRUN_LOW <<<"$(free_ports 5)"
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
DB_PASS="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

render() {
    sed -e "s|@STATE@|$STATE|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@MYSQL_PORT@|$MYSQL_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
        -e "s|@SRUN_PORTS@|$SRUN_LOW-$((SRUN_LOW + 20))|g" -e "s|@N_GPUS@|${#GPU_DEVICES[@]}|g" \
        "$HERE/$1.in" >"$STATE/etc/$1"
}
render slurm.conf
for dev in "${GPU_DEVICES[@]}"; do
    echo "NodeName=$NODE Name=gpu Type=fake File=$dev"
done >"$STATE/etc/gres.conf"
render slurmdbd.conf
chmod 600 "$STATE/etc/slurmdbd.conf"
# The Snakemake jobstep plugin (0.6.1) drops every SLURM_* variable, SLURM_CONF included,
# before the `srun` that runs a job's rule, so that srun would look for /etc/slurm/slurm.conf.
# This shim, first on PATH, hands it the test cluster's config again.
mkdir -p "$STATE/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$STATE/etc/slurm.conf" "$(command -v srun)" >"$STATE/bin/srun"
chmod +x "$STATE/bin/srun"
printf 'export SLURM_CONF=%s\nexport PATH=%s:$PATH\n' "$STATE/etc/slurm.conf" "$STATE/bin" >"$STATE/env.sh"
export SLURM_CONF="$STATE/etc/slurm.conf"

# munge: a fresh key for this cluster only; socket named in slurm.conf's AuthInfo.
mungekey --create --keyfile="$STATE/munge/munge.key" --bits=1024
start munged munged --foreground --force --num-threads=10 --key-file="$STATE/munge/munge.key" \
    --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
    --seed-file="$STATE/munge/munged.seed" --log-file="$STATE/log/munged.log"
wait_for 20 munged test -S "$STATE/munge/munge.socket"

# MariaDB for slurmdbd: own datadir, TCP on 127.0.0.1 only, small InnoDB files.
MYSQL_OPTS=(--no-defaults --datadir="$STATE/mysql" --user=root --skip-log-bin
    --innodb-log-file-size=8M --innodb-buffer-pool-size=32M)
mariadb-install-db "${MYSQL_OPTS[@]}" --auth-root-authentication-method=socket --skip-test-db \
    >"$STATE/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed: $STATE/log/mariadb-install.log"
start mariadbd mariadbd "${MYSQL_OPTS[@]}" --socket="$STATE/run/mysqld.sock" --port="$MYSQL_PORT" \
    --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$STATE/run/mysqld.pid" \
    --log-error="$STATE/log/mariadbd.log"
wait_for 60 mariadbd mariadb --no-defaults -S "$STATE/run/mysqld.sock" -u root -e "SELECT 1"
mariadb --no-defaults -S "$STATE/run/mysqld.sock" -u root -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF.
start slurmdbd slurmdbd -D
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster medlatent >/dev/null
sacctmgr -i add account medlatent-test Description=tests Organization=medlatent >/dev/null
sacctmgr -i add user root DefaultAccount=medlatent-test >/dev/null

start slurmctld slurmctld -D -i
wait_for 60 slurmctld scontrol ping
start slurmd slurmd -D -N "$NODE"
node_idle() { [[ $(sinfo -h -N -n "$NODE" -o %T) == idle ]]; }
wait_for 60 "node $NODE idle" node_idle

echo "SLURM up: $(sinfo -h -o '%P %D %T %G'); source $STATE/env.sh"
