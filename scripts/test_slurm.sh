#!/usr/bin/env bash
# A single-node SLURM cluster with accounting, for the tests that need one (`pytest -m slurm`):
# Debian's Slurm (slurm-wlm, slurmdbd), munge and MariaDB, on a machine where we are root and no
# init system runs the services. Installs the packages if missing, writes the config files,
# starts munged, mysqld, slurmdbd, slurmctld and slurmd as background daemons, registers the
# cluster, and waits until a job runs and `sacct` answers. A second call with the cluster up
# returns at once. Prints the partition's name (for LRSWEEP_TEST_SLURM_PARTITION):
#
#   export LRSWEEP_TEST_SLURM_PARTITION=$(scripts/test_slurm.sh)
#
# Accounting is not optional: submitit learns a job's state from `sacct`, and without it a task
# that ends without a result (cancelled, preempted) stays UNKNOWN and its sweep waits forever.
# The node has one fake GPU (a GRES counted by SLURM, no device behind it), so that a job asking
# for `--gpus-per-task=1` is scheduled, and max(4, cores) CPUs (LRSWEEP_TEST_SLURM_CPUS sets it).
# Daemons' logs: /var/log/slurm/. The MariaDB password is a throwaway for a local socket.
set -euo pipefail
PARTITION=debug
CLUSTER=lrsweep
NODE=$(hostname -s)
# At least 4 CPUs even on a 2-core machine (SLURM counts them, the kernel shares the cores): a
# 4-task worker array runs at once, and slurm_gpu's jobs (4 CPUs a task) fit as they are.
CPUS=${LRSWEEP_TEST_SLURM_CPUS:-$(($(nproc) > 4 ? $(nproc) : 4))}
MEM_MB=$(($(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
DB_PASSWORD=lrsweep-slurmdbd-pw
CONF=/etc/slurm
log() { echo "test_slurm: $*" >&2; }

cluster_up() { # a job runs and accounting answers
  timeout 20 srun -p "$PARTITION" -N1 -n1 -t 1 true >/dev/null 2>&1 &&
    timeout 10 sacct -n -X -o JobID >/dev/null 2>&1
}

job_accounted() { # a job runs and sacct has recorded its end
  local job
  job=$(sbatch --parsable -p "$PARTITION" -t 1 -o /dev/null --wrap true) || return 1
  wait_for "job $job in sacct" 30 sh -c "sacct -n -X -j $job -o State | grep -q COMPLETED"
}

running() { pgrep -x "$1" >/dev/null; }

wait_for() { # wait_for <what> <seconds> <command...>: poll until the command succeeds
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "$what did not come up within ${seconds}s (logs: /var/log/slurm/, /var/log/mysql/)"
  return 1
}

if command -v srun >/dev/null && running slurmctld && running slurmd && cluster_up; then
  echo "$PARTITION"
  exit 0
fi

install_packages() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null ||
    ! command -v munged >/dev/null || ! command -v mysqld_safe >/dev/null; then
    log "installing Debian's slurm-wlm, slurmdbd, munge, mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >&2
  fi
}

write_configs() {
  mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
  # No cgroups in a container: process tracking by /proc, no task confinement. CR_Core: cores
  # are the consumable (memory only a limit). ReturnToService=2: a node that went DOWN (a
  # restarted slurmd) comes back by itself.
  cat >"$CONF/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=60
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# sacct shows the GPUs a job was given (AllocTRES gres/gpu=N).
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  # One fake GPU: SLURM counts it and hands it to one task at a time; nothing is behind it.
  cat >"$CONF/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu Count=1 File=/dev/null
EOF
  cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
  chmod 600 "$CONF/slurmdbd.conf"
}

start_munge() {
  running munged && return 0
  [ -s /etc/munge/munge.key ] || { mungekey --create --force 2>/dev/null || create-munge-key -f; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  runuser -u munge -- munged --force
  wait_for munged 10 munge -n
}

start_mariadb() {
  if ! running mariadbd && ! running mysqld; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    setsid mysqld_safe >/dev/null 2>&1 </dev/null &
    wait_for mariadb 30 mysqladmin ping
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurm() {
  running slurmdbd || slurmdbd
  wait_for slurmdbd 30 sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=Cluster | grep -qx "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >&2
  running slurmctld || slurmctld
  wait_for slurmctld 30 scontrol ping
  running slurmd || slurmd
  # A node drained earlier (a slurmd restarted with another config) is put back in service.
  sleep 1
  sinfo -h -N -o %T | grep -Eq '^(drain|down|inval)' &&
    scontrol update nodename="$NODE" state=resume 2>/dev/null || true
  wait_for "node $NODE" 30 sh -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
}

install_packages
write_configs
start_munge
start_mariadb
start_slurm
wait_for "a job" 60 cluster_up
job_accounted
log "cluster '$CLUSTER' up: partition $PARTITION, node $NODE ($CPUS CPUs, 1 fake GPU)"
echo "$PARTITION"
