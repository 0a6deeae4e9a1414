#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM tests.
#   cluster.sh start DIR   writes DIR/slurm.conf (this host's name, CPUs and
#                          memory, as `slurmd -C` reports them), starts munged,
#                          slurmctld and slurmd directly (no systemd) and waits
#                          until the node is idle
#   cluster.sh stop DIR    stops the daemons started by `start DIR`
# Commands then find the cluster through SLURM_CONF=DIR/slurm.conf. Needs root
# (slurmd runs jobs as their owner) and Debian's slurm-wlm and munge; exits 77
# (skipped) when either is missing.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")

stop() {
  if [ -f "$dir/slurmctld.pid" ] && command -v scancel >/dev/null; then
    SLURM_CONF=$dir/slurm.conf timeout 10 scancel --user="$(id -un)" 2>/dev/null || true  # jobs a failed test left
  fi
  for daemon in slurmd slurmctld munged; do
    if [ -f "$dir/$daemon.pid" ]; then
      kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
    fi
  done
  for daemon in slurmd slurmctld munged; do
    for _ in $(seq 50); do
      [ -f "$dir/$daemon.pid" ] && kill -0 "$(cat "$dir/$daemon.pid" 2>/dev/null)" 2>/dev/null || break
      sleep 0.1
    done
    # One that does not end in 5 s (a slurmd waiting on a stuck job) would keep its port.
    [ -f "$dir/$daemon.pid" ] && kill -9 "$(cat "$dir/$daemon.pid" 2>/dev/null)" 2>/dev/null || true
    rm -f "$dir/$daemon.pid"
  done
}

if [ "$action" = stop ]; then
  stop
  exit 0
fi
[ "$action" = start ] || { echo "cluster.sh: unknown action '$action' (start|stop)" >&2; exit 2; }

stop  # a cluster left over from an interrupted run
rm -rf "$dir"  # and its slurm.conf: tests run only against a cluster started now
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "cluster.sh: $tool not found: install slurm-wlm and munge (skipped)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "cluster.sh: slurmd must run as root to start jobs (skipped)"; exit 77; }

mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"
# munged insists that its key and directories belong to the user it runs as.
mungekey --create --keyfile="$dir/munge/munge.key" 2>/dev/null || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
# Its own socket and ports: a munged or slurmd the machine may run already is left alone.
munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munged.pid" \
       --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"

node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
host=$(hostname -s)
cat > "$dir/slurm.conf" <<CONF
ClusterName=qforge-test
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=${QFORGE_SLURMCTLD_PORT:-6917}
SlurmdPort=${QFORGE_SLURMD_PORT:-6918}
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
# A requeued job waits cred_expire + 1 s before it may start again (121 s by default).
AuthInfo=cred_expire=5,socket=$dir/munge/munge.socket
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -c   # -c: a clean state, no jobs of an earlier cluster
slurmd
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "cluster.sh: node $host idle; SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "cluster.sh: the node did not become idle; sinfo says: $(sinfo -h 2>&1)" >&2
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
stop
exit 1
