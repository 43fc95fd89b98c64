#!/usr/bin/env bash
# Stand up a single-node Slurm cluster on localhost, without systemd, for the Slurm tests:
#   munge -> MariaDB (private, 127.0.0.1) -> slurmdbd -> slurmctld -> slurmd
# with accounting (so sacct works, as on a real cluster) and a fake "gpu" GRES backed by
# character devices, so GPU-tagged jobs are scheduled as GPU jobs on a machine without GPUs.
#
# Idempotent: a daemon whose pid file points at a live process is left alone. Every daemon it
# starts writes a pid file under $SLURM_CI_STATE; ci/slurm/stop.sh stops exactly those.
# Needs root (to install Debian packages and run slurmd). Prints the partition name on success.
set -euo pipefail

STATE=${SLURM_CI_STATE:-/tmp/lorasweep-slurm}
CLUSTER=lorasweep
PARTITION=ci
ACCOUNT=ci
DB_PORT=${SLURM_CI_DB_PORT:-3307}
MARKER="# written by lorasweep ci/slurm/start.sh"

log() { echo "[slurm-ci] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (installs packages, runs slurmd as root)"

install_packages() {
    local missing=()
    for bin in munged slurmctld slurmd slurmdbd sacct mariadbd; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "installing Debian packages (missing: ${missing[*]})"
    # Keep package scripts from starting daemons through /etc/init.d.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        slurm-wlm slurmdbd munge mariadb-server mariadb-client >/dev/null
    [ "$created_policy" -eq 1 ] && rm -f "$policy"
    return 0
}

alive() {  # alive PIDFILE: true if the pid file names a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "timed out after ${seconds}s waiting for $what"
}

install_packages
HOST=$(hostname -s)
mkdir -p "$STATE"/{run,log,spool/ctld,spool/d,gres,mysql-run}
chmod 755 "$STATE"

# --- munge -------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chown munge:munge "$STATE/run" 2>/dev/null || true
chmod 777 "$STATE/run"
if ! alive "$STATE/run/munged.pid"; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE/run/munged.pid" --force
fi
wait_for 10 munge sh -c 'munge -n | unmunge'

# --- MariaDB and slurmdbd (accounting) ---------------------------------------------------
if [ ! -d "$STATE/mysql/mysql" ]; then
    log "initialising MariaDB data directory"
    mkdir -p "$STATE/mysql"
    chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=mysql \
        --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1
fi
chown mysql:mysql "$STATE/mysql-run"
if ! alive "$STATE/mysql-run/mariadbd.pid"; then
    log "starting MariaDB on 127.0.0.1:$DB_PORT"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
        --bind-address=127.0.0.1 --port="$DB_PORT" \
        --socket="$STATE/mysql-run/mysqld.sock" --pid-file="$STATE/mysql-run/mariadbd.pid" \
        --log-error="$STATE/log/mariadb.log" </dev/null >/dev/null 2>&1 &
fi
wait_for 30 MariaDB mariadb --no-defaults -S "$STATE/mysql-run/mysqld.sock" -u root -e 'SELECT 1'
mariadb --no-defaults -S "$STATE/mysql-run/mysqld.sock" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-ci';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-ci';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- Slurm configuration (client tools read /etc/slurm/slurm.conf) -----------------------
mkdir -p /etc/slurm
for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -e "/etc/slurm/$f" ] && ! grep -qF "$MARKER" "/etc/slurm/$f"; then
        die "/etc/slurm/$f exists and was not written by this script; refusing to overwrite it"
    fi
done
for i in 0 1; do
    [ -c "$STATE/gres/gpu$i" ] || mknod "$STATE/gres/gpu$i" c 1 3
done
NODE_LINE=$(slurmd -C | head -n 1)
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEMORY=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEMORY=$((MEMORY * 85 / 100))

cat >/etc/slurm/slurmdbd.conf <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm-ci
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf

cat >/etc/slurm/gres.conf <<EOF
$MARKER
Name=gpu Type=fake File=$STATE/gres/gpu[0-1]
EOF

cat >/etc/slurm/slurm.conf <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY Gres=gpu:fake:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons -----------------------------------------------------------------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd
fi
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true

if ! alive "$STATE/run/slurmctld.pid"; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
fi
wait_for 30 slurmctld scontrol ping
if ! alive "$STATE/run/slurmd.pid"; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

node_state() { sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n 1; }
for _ in $(seq 1 150); do
    case "$(node_state)" in
        idle*|mixed*|allocated*) break ;;
        drain*|down*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
case "$(node_state)" in
    idle*|mixed*|allocated*) ;;
    *) die "node $HOST is '$(node_state)', not idle; see $STATE/log" ;;
esac
log "cluster '$CLUSTER' up: partition '$PARTITION', account '$ACCOUNT', node $HOST with gpu:fake:2"
echo "$PARTITION"
