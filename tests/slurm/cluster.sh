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
source "$(dirname "$(realpath "$0")")/slurm_common.sh"
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

mkdir -p "$dir/state" "$dir/spool"
# Its own munge socket and ports: a munged or slurmd the machine may run already is left alone.
start_munged "$dir"

node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
host=$(hostname -s)
{
  cat <<CONF
ClusterName=qforge-test
SlurmctldHost=$host
SlurmctldPort=${QFORGE_SLURMCTLD_PORT:-6917}
SlurmdPort=${QFORGE_SLURMD_PORT:-6918}
SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/slurmd.log
CONF
  slurm_conf_common "$dir"
  echo "$node State=UNKNOWN"
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$dir/slurm.conf"
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
