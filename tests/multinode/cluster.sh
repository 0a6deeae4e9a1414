#!/usr/bin/env bash
# A virtual two-node cluster on this machine, for the multi-node tests.
#   cluster.sh start DIR   starts two "hosts", qf-node1 at 127.0.0.2 and qf-node2 at
#                          127.0.0.3, each a UTS namespace (its own host name), a
#                          network namespace (its own address, so MPI between them goes
#                          over TCP, not shared memory) and its own DIR/node-tmp.
#                          Data and outputs go in DIR/shared, which both hosts see. A veth pair joins them; every
#                          address is in the loopback range and nothing leaves the
#                          machine. Then munged, slurmctld (on qf-node1) and one slurmd
#                          per host.
#   cluster.sh stop DIR    ends every process inside the hosts and the daemons; the
#                          namespaces go with their last process.
# DIR then holds:
#   node-exec HOST CMD...  runs CMD as a shell command on HOST (its name or address), in
#                          the caller's environment: the tests start commands with it
#   node-ssh HOST CMD...   the same in a fresh login environment, as ssh would:
#                          Open MPI's launcher (plm_rsh_agent)
#   hostfile               both hosts with 2 slots each, for mpirun --hostfile
#   mpirun-args            the Open MPI options that keep MPI on the hosts' links
#   slurm.conf             the cluster's SLURM configuration: SLURM's commands reach
#                          slurmctld at 127.0.0.2 from a host (node-exec), not from outside
# Needs root (namespaces, slurmd), iproute2, util-linux, iptables (fault tests), slurm-wlm
# and munge; exits 77 (skipped) when one is missing.
set -euo pipefail
source "$(dirname "$(realpath "$0")")/../slurm/slurm_common.sh"
action=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
hosts=(qf-node1 qf-node2)
addrs=(127.0.0.2 127.0.0.3)

# Every process whose network namespace is a host's: ranks and daemons a failed test left.
processes_on_hosts() {
  local keeper ns pid
  for keeper in "$dir"/host-*.pid; do
    [ -f "$keeper" ] || continue
    ns=$(readlink "/proc/$(cat "$keeper")/ns/net" 2>/dev/null) || continue
    for pid in /proc/[0-9]*; do
      [ "$(readlink "$pid/ns/net" 2>/dev/null)" = "$ns" ] && echo "${pid#/proc/}"
    done
  done
  return 0
}

stop() {
  local pids
  pids=$(processes_on_hosts)
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  for _ in $(seq 50); do
    pids=$(processes_on_hosts)
    [ -z "$pids" ] && break
    sleep 0.1
  done
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  [ -f "$dir/munged.pid" ] && kill "$(cat "$dir/munged.pid")" 2>/dev/null || true
  rm -f "$dir"/host-*.pid "$dir/munged.pid"
}

if [ "$action" = stop ]; then
  stop
  exit 0
fi
[ "$action" = start ] || { echo "cluster.sh: unknown action '$action' (start|stop)" >&2; exit 2; }

[ "$(id -u)" = 0 ] || { echo "cluster.sh: needs root for namespaces and slurmd (skipped)"; exit 77; }
for tool in unshare nsenter ip iptables munged slurmctld slurmd sbatch mpirun; do
  command -v "$tool" >/dev/null || { echo "cluster.sh: $tool not found: run jobs/setup.sh (skipped)"; exit 77; }
done
if ! why=$(unshare --uts --net --mount true 2>&1); then
  echo "cluster.sh: the kernel refuses new namespaces here ($why) (skipped)"; exit 77
fi
stop  # a cluster left over from an interrupted run
rm -rf "$dir"
mkdir -p "$dir/shared" "$dir/node-tmp"
chmod 1777 "$dir/shared"

# A host: a process that holds a UTS, a network and a mount namespace, the host's name
# set inside and its own DIR/node-tmp, SLURM's TmpFS (where its PMIx plugin keeps per-job
# files under names that would collide between the hosts). Everything else is shared, like
# the shared file system of a cluster.
start_host() {
  local name=$1 pid
  setsid unshare --uts --net --mount --propagation private -- \
    sh -c "mount -t tmpfs -o mode=1777 tmpfs '$dir/node-tmp' && hostname $name && exec sleep infinity" \
    </dev/null >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do
    [ "$(nsenter -t "$pid" --uts hostname 2>/dev/null)" = "$name" ] && break
    sleep 0.1
  done
  echo "$pid" > "$dir/host-$name.pid"
}

# Loopback addresses are "local" to every namespace (the route 127.0.0.0/8 via lo) and
# are dropped on other links (martians). Each host keeps only 127.0.0.1 on lo, owns its
# address on the link, and accepts loopback-range packets there (route_localnet).
wire_host() {
  local pid=$1 addr=$2
  nsenter -t "$pid" --net sh -e -c "
    ip link set lo up
    ip route del local 127.0.0.0/8 dev lo table local
    ip route replace local 127.0.0.1 dev lo table local
    ip addr add $addr/8 dev qf0
    ip link set qf0 up
    sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.qf0.route_localnet=1
    sysctl -qw net.ipv4.tcp_retries2=4"  # give up on a silent peer after seconds, not 15 minutes (README)
}

for name in "${hosts[@]}"; do start_host "$name"; done
pid1=$(cat "$dir/host-${hosts[0]}.pid")
pid2=$(cat "$dir/host-${hosts[1]}.pid")
ip link add qf0 netns "$pid1" type veth peer name qf0 netns "$pid2"
wire_host "$pid1" "${addrs[0]}"
wire_host "$pid2" "${addrs[1]}"

cat > "$dir/node-exec" <<EXEC
#!/usr/bin/env bash
# node-exec HOST CMD...: CMD as a shell command on HOST of the cluster in $dir.
set -euo pipefail
case "\$1" in
  ${hosts[0]}|${addrs[0]}) pid=\$(cat "$dir/host-${hosts[0]}.pid") ;;
  ${hosts[1]}|${addrs[1]}) pid=\$(cat "$dir/host-${hosts[1]}.pid") ;;
  *) echo "node-exec: no host '\$1' in this cluster (${hosts[*]})" >&2; exit 255 ;;
esac
shift
exec nsenter -t "\$pid" --uts --net --mount -- /bin/sh -c "\$*"
EXEC
cat > "$dir/node-ssh" <<SSH
#!/bin/sh
# node-ssh HOST CMD...: node-exec with a fresh login environment, as ssh gives:
# Open MPI's launcher, so only what mpirun forwards (OMPI_*, -x NAME) reaches the ranks.
exec env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$dir/node-exec" "\$@"
SSH
chmod +x "$dir/node-exec" "$dir/node-ssh"
printf '%s slots=2\n' "${addrs[@]}" > "$dir/hostfile"
# MPI and Open MPI's own daemons talk over the link only; shared memory only inside a host.
echo "--hostfile $dir/hostfile --mca plm_rsh_agent $dir/node-ssh --mca btl self,vader,tcp" \
     "--mca btl_tcp_if_include qf0 --mca oob_tcp_if_include qf0" > "$dir/mpirun-args"

for i in 0 1; do
  out=$("$dir/node-exec" "${hosts[$i]}" "hostname; ip -4 -o addr show dev qf0")
  case "$out" in
    "${hosts[$i]}"*"${addrs[$i]}/8"*) ;;
    *) echo "cluster.sh: host ${hosts[$i]} is not set up: $out" >&2; stop; exit 1 ;;
  esac
done

# SLURM: slurmctld on the first host, a slurmd on each; munged's socket is a file, which every
# host sees (one key, as on a real cluster).
mkdir -p "$dir/state"
start_munged "$dir"
resources=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')  # CPUs=... RealMemory=...: each host is this machine
{
  cat <<CONF
ClusterName=qforge-two-nodes
SlurmctldHost=${hosts[0]}(${addrs[0]})
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=$dir/spool-%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/slurmd-%n.log
TmpFS=$dir/node-tmp
CONF
  slurm_conf_common "$dir"
  for i in 0 1; do echo "NodeName=${hosts[$i]} NodeAddr=${addrs[$i]} $resources State=UNKNOWN"; done
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$dir/slurm.conf"
export SLURM_CONF=$dir/slurm.conf
"$dir/node-exec" "${hosts[0]}" "slurmctld -c"  # -c: a clean state, no jobs of an earlier cluster
for name in "${hosts[@]}"; do "$dir/node-exec" "$name" slurmd; done
for _ in $(seq 150); do
  if [ "$("$dir/node-exec" "${hosts[0]}" "sinfo -h -N -o %T 2>/dev/null" | grep -cx idle)" = 2 ]; then
    echo "cluster.sh: hosts ${hosts[*]} at ${addrs[*]}, SLURM nodes idle; SLURM_CONF=$SLURM_CONF;" \
         "run on a host with $dir/node-exec HOST CMD"
    exit 0
  fi
  sleep 0.2
done
echo "cluster.sh: the SLURM nodes did not become idle; sinfo says: $("$dir/node-exec" "${hosts[0]}" "sinfo -N" 2>&1)" >&2
tail -n 20 "$dir"/slurm*.log >&2 || true
stop
exit 1
