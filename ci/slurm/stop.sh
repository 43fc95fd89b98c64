#!/usr/bin/env bash
# Stop the cluster started by ci/slurm/start.sh: cancel this cluster's jobs, then stop each
# daemon through the pid file start.sh recorded (slurmd, slurmctld, slurmdbd, MariaDB, munge).
# Nothing else on the machine is touched. Safe to run when nothing is running.
set -uo pipefail

STATE=${SLURM_CI_STATE:-/tmp/lorasweep-slurm}

stop() {  # stop NAME PIDFILE
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        echo "[slurm-ci] stopping $name ($pid)" >&2
        kill "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
}

if [ -s "$STATE/run/slurmctld.pid" ] && command -v scancel >/dev/null; then
    scancel --full --user="$(id -un)" 2>/dev/null || true
fi
stop slurmd "$STATE/run/slurmd.pid"
stop slurmctld "$STATE/run/slurmctld.pid"
stop slurmdbd "$STATE/run/slurmdbd.pid"
stop mariadbd "$STATE/mysql-run/mariadbd.pid"
stop munged "$STATE/run/munged.pid"
exit 0
