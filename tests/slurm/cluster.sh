#!/usr/bin/env bash
# A real single-node SLURM cluster (munge, MariaDB + slurmdbd, slurmctld, slurmd) with two fake
# a6000 GPUs, so tests can run `snakemake --profile slurm` against SLURM itself. Root only.
#
#   cluster.sh install            apt-get the Debian packages (quick when they are there)
#   cluster.sh start STATE_DIR    configure and start every daemon, wait until the node is idle
#   cluster.sh stop STATE_DIR     cancel jobs, stop every daemon by its PID file (bounded waits)
#
# Everything lives under STATE_DIR except /etc/slurm/{slurm,gres,slurmdbd}.conf: the executor
# plugin strips SLURM_* variables (SLURM_CONF included) before its in-job srun, so the
# configuration must be where SLURM looks by default. No systemd and no cgroups are needed
# (proctrack/linuxproc, task/none). Ports: slurmctld 6817, slurmd 6818, slurmdbd 6819 and
# MariaDB on 127.0.0.1:$ABMSEG_SLURM_DB_PORT (3316), not 3306, to keep clear of a system MariaDB.
set -Eeuo pipefail
# set -e would otherwise end the script without a word (a CI run once failed with empty output).
trap 'echo "cluster.sh: ERROR: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CLUSTER_NAME=abmsegci
ACCOUNT=abmseg
DB_PORT=${ABMSEG_SLURM_DB_PORT:-3316}
# Start/stop order; stop goes in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PORTS=(6817 6818 6819 "$DB_PORT")
START_TIMEOUT=${ABMSEG_SLURM_START_TIMEOUT:-60}
STOP_TIMEOUT=20
export PATH="/usr/sbin:/sbin:$PATH"

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (daemons, mknod, /etc/slurm)"; }

# Wait until "$@" succeeds, at most $1 seconds; quiet.
wait_for() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}

not() { ! "$@"; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

cmd_install() {
    need_root
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "packages already installed"
        return
    fi
    log "installing ${missing[*]}"
    # Without systemd, the maintainer scripts would try to start the daemons with the Debian
    # default config (and a system munged/MariaDB); this script starts its own, so forbid it.
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    # Package lists may be missing (fresh machine) or stale: update once and retry.
    apt_install "${missing[@]}" || { apt-get update -qq && apt_install "${missing[@]}"; } ||
        die "apt-get failed"
}

# ---------------------------------------------------------------------------------------------
# Each daemon writes its PID file as its own user, into a folder that user owns.
pid_file() {
    case $1 in
    munged) echo "$STATE/munge/munged.pid" ;;
    mariadbd) echo "$STATE/mariadb/mariadbd.pid" ;;
    *) echo "$STATE/run/$1.pid" ;;
    esac
}

# A process that has not exited (a zombie has: PID 1 may reap it late).
alive() { [[ -e /proc/$1 && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

pid_of() {
    local file
    file=$(pid_file "$1")
    [[ -s $file ]] || return 1
    local pid
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    # Only a live process with the daemon's name (a stale file may name a recycled PID).
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && alive "$pid" || return 1
    echo "$pid"
}

stop_daemon() {
    local name=$1 pid
    if ! pid=$(pid_of "$name"); then
        rm -f "$(pid_file "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$STOP_TIMEOUT" not alive "$pid"; then
        log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 not alive "$pid" || die "$name (pid $pid) does not exit"
    fi
    rm -f "$(pid_file "$name")"
}

cancel_jobs() {
    # Jobs of a failed or interrupted run: their slurmstepd would outlive slurmd otherwise.
    # squeue/scancel talk to the cluster of /etc/slurm/slurm.conf: only if that is this one.
    pid_of slurmctld >/dev/null && [[ $(previous_state) == "$STATE" ]] || return 0
    local jobs
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs || true
    # shellcheck disable=SC2016 # expanded by the inner bash, at each try
    wait_for "$STOP_TIMEOUT" bash -c '[[ -z $(timeout 5 squeue -h -o %A) ]]' ||
        log "jobs still listed after ${STOP_TIMEOUT}s: $(timeout 5 squeue -h -o '%A %T')"
}

cmd_stop() {
    need_root
    [[ -d $STATE ]] || return 0
    cancel_jobs
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
}

# The state folder of the cluster that /etc/slurm/slurm.conf describes, if this script wrote it.
# Empty when there is no such file (a fresh machine): sed's exit 2 must not end the script.
previous_state() {
    [[ -f /etc/slurm/slurm.conf ]] || return 0
    sed -n 's|^# Written by tests/slurm/cluster.sh for the test cluster in ||p' \
        /etc/slurm/slurm.conf | head -n 1
}

# That cluster is stopped by its own PID files: a test killed before its teardown must not
# block the next start.
stop_previous() {
    local previous
    previous=$(previous_state)
    [[ -n $previous && $previous != "$STATE" && -d $previous ]] || return 0
    log "stopping the previous test cluster in $previous"
    bash "$0" stop "$previous"
}

# ---------------------------------------------------------------------------------------------
show_logs() {
    local f
    for f in "$STATE"/{log,munge,mariadb}/*.log; do
        [[ -s $f ]] || continue
        echo "----- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

fail_start() {
    log "ERROR: $*"
    show_logs
    exit 1
}

write_configs() {
    local node=$1 first_job_id=$2 dbpass=$3
    local cpus mem_kb real_mb
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    real_mb=$((mem_kb * 8 / 10 / 1024))
    mkdir -p /etc/slurm
    cat >/etc/slurm/slurm.conf <<EOF
# Written by tests/slurm/cluster.sh for the test cluster in $STATE
ClusterName=$CLUSTER_NAME
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# The munge socket for slurmdbd connections (AuthInfo covers only the others).
AccountingStoragePass=$STATE/munge/munge.socket
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
# Finished jobs stay in slurmctld 5 min: squeue-based status checks would see them too.
MinJobAge=300
# A fresh state folder over a stored accounting database would reuse its job IDs otherwise.
FirstJobId=$first_job_id
DefMemPerCPU=1000
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb Gres=gpu:a6000:2 State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP
EOF
    # slurmd accepts only character devices as GPU files (it never opens them).
    cat >/etc/slurm/gres.conf <<EOF
AutoDetect=off
NodeName=$node Name=gpu Type=a6000 File=$STATE/dev/nvidia[0-1]
EOF
    (
        umask 077
        cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
EOF
    )
    chown slurm:slurm /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf
    chmod 644 /etc/slurm/slurm.conf /etc/slurm/gres.conf
}

start_munge() {
    local dir=$STATE/munge
    mkdir -p "$dir"
    chown munge:munge "$dir"
    chmod 755 "$dir"
    if [[ ! -s $dir/munge.key ]]; then
        dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$dir/munge.key"
    chmod 600 "$dir/munge.key"
    runuser -u munge -- munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" ||
        fail_start "munged did not start"
    wait_for 10 bash -c "munge -n -S '$dir/munge.socket' | unmunge -S '$dir/munge.socket'" ||
        fail_start "munge credentials do not round-trip through $dir/munge.socket"
}

sql() { mariadb --no-defaults -S "$STATE/mariadb/mysqld.sock" -u root -N -B -e "$1"; }

start_mariadb() {
    local dir=$STATE/mariadb
    mkdir -p "$dir"
    chown mysql:mysql "$dir"
    if [[ ! -d $dir/data/mysql ]]; then
        mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$dir/mariadb-install.log" 2>&1 ||
            fail_start "mariadb-install-db failed"
    fi
    setsid mariadbd --no-defaults --user=mysql --datadir="$dir/data" \
        --socket="$dir/mysqld.sock" --pid-file="$dir/mariadbd.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
        --log-error="$dir/mariadbd.log" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        </dev/null >>"$dir/mariadbd.out" 2>&1 &
    wait_for 60 sql "SELECT 1" || fail_start "MariaDB does not answer on $dir/mysqld.sock"
    wait_for 10 pid_of mariadbd || fail_start "mariadbd wrote no PID file"
}

# The next free job ID: above every job stored in the accounting database.
first_job_id() {
    local max
    max=$(sql "SELECT COALESCE(MAX(id_job), 0) FROM slurm_acct_db.${CLUSTER_NAME}_job_table" \
        2>/dev/null) || max=0
    echo $((max + 1))
}

setup_accounts() {
    wait_for 30 sacctmgr -n list cluster ||
        fail_start "slurmdbd does not answer (sacctmgr list cluster)"
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER_NAME" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null || fail_start "sacctmgr add cluster"
    fi
    if [[ -z $(sacctmgr -n -P list account "$ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER_NAME" \
            description="abmseg tests" organization=abmseg >/dev/null ||
            fail_start "sacctmgr add account"
    fi
    # The submitting user (root): its default account stays "root"; abmseg is also allowed.
    if [[ -z $(sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user) ]]; then
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER_NAME" >/dev/null ||
            fail_start "sacctmgr add user"
    fi
}

cmd_start() {
    need_root
    local d
    for d in slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db sacctmgr sinfo; do
        command -v "$d" >/dev/null || die "$d not found: run '$0 install' first"
    done
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    # The daemons run as slurm, munge and mysql: every folder above STATE must let them in.
    runuser -u slurm -- test -x "$STATE" ||
        die "$STATE is not reachable by user slurm (a parent folder is private): use /tmp/..."
    # A run that crashed earlier (in this folder or another): stop what it left.
    stop_previous
    cmd_stop
    local port
    for port in "${PORTS[@]}"; do
        ! port_in_use "$port" ||
            die "port $port is in use: another SLURM or MariaDB runs here ('$0 stop' its folder)"
    done
    mkdir -p "$STATE"/{run,log,ctld,slurmd,dev}
    chown slurm:slurm "$STATE"/{run,log,ctld}
    chmod 755 "$STATE"/{run,log}

    local node
    node=$(hostname -s)
    local gpu
    for gpu in 0 1; do
        [[ -c $STATE/dev/nvidia$gpu ]] || mknod "$STATE/dev/nvidia$gpu" c 195 "$gpu"
    done

    start_munge
    start_mariadb
    local dbpass
    if [[ ! -s $STATE/mariadb/slurm.pass ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' \
            >"$STATE/mariadb/slurm.pass")
    fi
    dbpass=$(cat "$STATE/mariadb/slurm.pass")
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
        fail_start "cannot create the slurm database user"
    write_configs "$node" "$(first_job_id)" "$dbpass"

    slurmdbd || fail_start "slurmdbd did not start"
    wait_for 30 pid_of slurmdbd || fail_start "slurmdbd wrote no PID file"
    setup_accounts
    slurmctld || fail_start "slurmctld did not start"
    wait_for 30 pid_of slurmctld || fail_start "slurmctld wrote no PID file"
    slurmd -N "$node" || fail_start "slurmd did not start"
    wait_for 30 pid_of slurmd || fail_start "slurmd wrote no PID file"
    # One line per partition the node is in; all must say idle.
    wait_for "$START_TIMEOUT" bash -c \
        "[[ \$(timeout 10 sinfo -h -N -n '$node' -o %T | sort -u) == idle ]]" ||
        fail_start "node $node is not idle after ${START_TIMEOUT}s: $(timeout 10 sinfo -N -l 2>&1)"
    log "cluster $CLUSTER_NAME up: node $node, $(nproc) CPUs, gpu:a6000:2, partitions cpu, gpu"
}

# ---------------------------------------------------------------------------------------------
usage() { die "usage: $0 install | start STATE_DIR | stop STATE_DIR"; }

case ${1:-} in
install) cmd_install ;;
start | stop)
    [[ $# -eq 2 ]] || usage
    STATE=$(realpath -m "$2")
    "cmd_$1"
    ;;
*) usage ;;
esac
