# What the test clusters share (sourced by tests/slurm/cluster.sh and tests/multinode/cluster.sh).

# start_munged DIR: munged with its own key, socket and pid file under DIR (DIR/munged.pid), so
# a munged the machine may run already is left alone.
start_munged() {
  local dir=$1
  mkdir -p "$dir/munge"
  chmod 700 "$dir/munge"
  # munged insists that its key and directories belong to the user it runs as.
  mungekey --create --keyfile="$dir/munge/munge.key" 2>/dev/null ||
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munged.pid" \
         --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"
}

# slurm_conf_common DIR: the slurm.conf lines every test cluster has: root runs the daemons and
# the jobs, state and the munge socket under DIR, no cgroups, no accounting, CPUs as the unit.
slurm_conf_common() {
  local dir=$1
  cat <<CONF
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/slurmctld.log
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
CONF
}
