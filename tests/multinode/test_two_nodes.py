"""qforge across two hosts: the virtual two-node cluster tests/multinode/cluster.sh starts
(QFORGE_CLUSTER_DIR names it). qf-node1 (127.0.0.2) and qf-node2 (127.0.0.3) have their own
host names and network namespaces, so MPI between them goes over TCP, and SLURM runs a
slurmd on each; data and outputs live in the cluster's shared directory. mpirun and SLURM's
commands run on qf-node1. Each test_* function is a ctest case (multinode_<case>); they are
skipped when no cluster is running."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import ASSETS, QFORGE, check, contains, freeze_mid_fine_tune, freeze_when, send  # noqa: E402

CLUSTER = os.environ.get("QFORGE_CLUSTER_DIR", "")
NODE_EXEC = os.path.join(CLUSTER, "node-exec")
HOSTS = ("qf-node1", "qf-node2")


@pytest.fixture(autouse=True)
def work():
    if not os.path.exists(NODE_EXEC):
        pytest.skip("no two-node cluster running (tests/multinode/cluster.sh start DIR)")
    with qt.work_dir("qforge-2nodes-", parent=os.path.join(CLUSTER, "shared")) as path:
        yield path


def on_host(host, command):
    """The argv that runs the shell `command` on `host`, in the test's directory."""
    return [NODE_EXEC, host, f"cd {shlex.quote(qt.WORK)} && {command}"]


def mpirun_on_both(args, forward=()):
    """mpirun on qf-node1 over both hosts, 2 ranks each (ranks 0, 1 on qf-node1); the ranks
    get a fresh environment, as over ssh, plus the variables named in `forward`."""
    with open(os.path.join(CLUSTER, "mpirun-args")) as f:
        options = f.read().strip()
    exports = "".join(f" -x {name}" for name in forward)
    return on_host(HOSTS[0], f"exec mpirun {options}{exports} -np 4 {QFORGE} {shlex.join(args)}")


def run(argv, expect=0, timeout=300, env=None):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    out = p.stdout + p.stderr
    check(expect is None or p.returncode == expect, f"{argv[-1]}: exit {p.returncode}, expected {expect}\n{out}")
    return out


class Started:
    """A command running in the background, its output going to a file: a daemon it leaves
    on the other host (an orted whose host was cut off) must not hold a pipe open."""

    def __init__(self, argv, env=None):
        self.log = os.path.join(qt.WORK, f"started-{time.monotonic_ns()}.out")
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def finish(self, timeout):
        """Its exit status and output, once it has ended within `timeout` s."""
        status = self.process.wait(timeout=timeout)
        return status, self.output()

    def output(self):
        with open(self.log) as f:
            return f.read()


def processes_on(host, name):
    """PIDs of the processes called `name` running on cluster `host`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != name:
                    continue
        except OSError:
            continue
        if host_of(pid) == host:
            found.append(int(pid))
    return found


def host_of(pid):
    """The cluster host a process runs on (by its UTS namespace), or None."""
    try:
        mine = os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return None
    for host in HOSTS:
        with open(os.path.join(CLUSTER, f"host-{host}.pid")) as f:
            if os.readlink(f"/proc/{f.read().strip()}/ns/uts") == mine:
                return host
    return None


def read(*parts):
    with open(os.path.join(qt.WORK, *parts)) as f:
        return f.read()


def quant_params(out_dir):
    with open(os.path.join(qt.WORK, out_dir, "quant_params.json"), "rb") as f:
        return f.read()


def experiment(name, extra=""):
    return qt.write_config(name, f"""
model: {{path: {ASSETS}/resnet18_traced.pt}}
calibration_inputs: {{files: [{ASSETS}/images.h5], batch_size: 4}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{}}
layer_quantization_settings:
  'layer1.*': {{activations: {{observer: percentile, percentile: 99.9}}}}
  'layer3.*': {{activations: {{observer: entropy, symmetric: true, signed: true}}}}
""" + extra)


def fine_tune_experiment(name, steps, extra=""):
    return qt.compile_config(name, "tuple_model.pt", "text_tuple.h5", 5, "libtorch", f"""
compile_options:
  fine_tune: {{enabled: true, steps: {steps}, batch_size: 8, lora_rank: 4, learning_rate: 0.005, warmup_steps: 1,
              log_every: 1, lora_dropout: 0.1}}
""" + extra)


def tuple_model_outputs(out_dir):
    import torch
    ids = torch.arange(24).reshape(2, 12) % 100
    return torch.jit.load(os.path.join(qt.WORK, out_dir, "model.qforge.pt"))(ids, torch.ones_like(ids))


def check_losses_match(a_dir, b_dir, rel):
    a = json.loads(read(a_dir, "report.json"))["fine_tune"]["loss"]
    b = json.loads(read(b_dir, "report.json"))["fine_tune"]["loss"]
    check(len(a) == len(b) and all(abs(x - y) <= rel * abs(x) for x, y in zip(a, b)),
          f"losses of {b_dir} differ from {a_dir} by more than {rel} relative:\n{a}\n{b}")


# --- Open MPI across the hosts ---------------------------------------------------------------

def test_compile_on_2_nodes_equals_1_rank(work):
    cfg = experiment("inv.yaml")
    qt.run(["compile", cfg, "--set", "out_dir=one"], timeout=300)
    out = run(mpirun_on_both(["compile", cfg, "--set", "out_dir=two_nodes"]))
    contains(out, "compiled 'resnet18_traced' on 4 rank(s) on 2 hosts: ranks 0, 1 on qf-node1, ranks 2, 3 on qf-node2")
    check(quant_params("two_nodes") == quant_params("one"), "quant_params.json on 2 nodes x 2 ranks differs from 1 rank")
    report = json.loads(read("two_nodes", "report.json"))
    check(report["hosts"] == [{"name": "qf-node1", "ranks": [0, 1]}, {"name": "qf-node2", "ranks": [2, 3]}],
          f"report.json: hosts {report['hosts']}")
    # Every rank's log in the shared output directory, each naming its host.
    for rank in range(4):
        contains(read("two_nodes", "logs", f"rank-{rank}.log"), f"rank {rank} of 4 on {HOSTS[rank // 2]}")


def test_fine_tune_on_2_nodes_matches_1_rank(work):
    # Data-parallel QA-LoRA over TCP between hosts: the same global batches, so one
    # process and 2 x 2 ranks agree within float tolerance (README: 1e-5 relative).
    import torch
    cfg = fine_tune_experiment("ft.yaml", steps=8)
    qt.run(["compile", cfg, "--set", "out_dir=one"], timeout=300)
    run(mpirun_on_both(["compile", cfg, "--set", "out_dir=two_nodes"]))
    check_losses_match("one", "two_nodes", rel=1e-5)
    check(torch.allclose(tuple_model_outputs("one"), tuple_model_outputs("two_nodes"), rtol=1e-4, atol=1e-5),
          "the models fine-tuned on 1 rank and on 2 nodes differ")


# --- Faults across hosts -----------------------------------------------------------------------

def calibrations_logged(out_dir):
    """How many calibrations rank 0's log (appended to by every run) has recorded."""
    log = os.path.join(qt.WORK, out_dir, "logs", "rank-0.log")
    return open(log).read().count("calibration:") if os.path.exists(log) else 0


def start_frozen_in_calibration(cfg, out_dir, env=None, forward=()):
    """Starts a compile on both hosts and returns it with its 4 ranks frozen in calibration."""
    seen = calibrations_logged(out_dir)  # the earlier runs' lines
    begun = qt.log_grew(os.path.join(qt.WORK, out_dir, "logs", "rank-0.log"))
    job = Started(mpirun_on_both(["compile", cfg, "--set", f"out_dir={out_dir}"], forward=forward), env=env)
    ranks = freeze_when([cfg, f"out_dir={out_dir}"], 4, lambda: calibrations_logged(out_dir) > seen, "in calibration",
                        begun=begun)
    return job, ranks


def check_previous_artifacts_intact(out_dir, before):
    check(quant_params(out_dir) == before, f"{out_dir}/quant_params.json changed by the failed run")
    import torch
    torch.jit.load(os.path.join(qt.WORK, out_dir, "model.qforge.pt"))  # still complete


def test_node_killed_mid_calibration_ends_the_job(work):
    cfg = experiment("kill.yaml")
    run(mpirun_on_both(["compile", cfg, "--set", "out_dir=out"]))
    before = quant_params("out")
    job, ranks = start_frozen_in_calibration(cfg, "out")
    lost = [pid for pid in ranks if host_of(pid) == HOSTS[1]]
    check(len(lost) == 2, f"ranks on {HOSTS[1]}: {lost} of {ranks}")
    send(lost, signal.SIGKILL)
    send(ranks, signal.SIGCONT)
    killed = time.time()
    status, out = job.finish(timeout=120)
    # Open MPI ends the job as soon as qf-node2's daemon reports its ranks dead.
    check(status == 128 + signal.SIGKILL, f"exit {status}, expected {128 + signal.SIGKILL}:\n{out}")
    check(time.time() - killed < 60, f"the job took {time.time() - killed:.0f} s to end")
    contains(out, "on node 127.0.0.3 exited on signal 9")
    check_previous_artifacts_intact("out", before)


def test_node_killed_mid_fine_tuning_resumes_from_checkpoint(work):
    import torch
    cfg = fine_tune_experiment("ft.yaml", steps=40, extra="  checkpoint_every: 4\n")
    run(mpirun_on_both(["compile", cfg, "--set", "out_dir=whole"]))
    job = Started(mpirun_on_both(["compile", cfg, "--set", "out_dir=parts"]))
    ranks = freeze_mid_fine_tune([cfg, "out_dir=parts"], os.path.join(work, "parts", "logs", "rank-0.log"),
                                 ranks=4, steps=40, after=10)
    send([pid for pid in ranks if host_of(pid) == HOSTS[1]], signal.SIGKILL)
    send(ranks, signal.SIGCONT)
    status, out = job.finish(timeout=120)
    check(status == 128 + signal.SIGKILL, f"exit {status}:\n{out}")
    check(os.path.exists(os.path.join(work, "parts", "checkpoints", "fine_tune.pt")), "no checkpoint after the kill")
    out = run(mpirun_on_both(["compile", cfg, "--set", "out_dir=parts"]))
    contains(out, "resumed from")
    check_losses_match("whole", "parts", rel=0)
    check(torch.equal(tuple_model_outputs("whole"), tuple_model_outputs("parts")),
          "the resumed model differs from the uninterrupted one")


def test_unreachable_host_mid_collective_names_it(work):
    # qf-node2's address dropped by qf-node1's firewall while the ranks calibrate: TCP keeps
    # the silent connections open, so the collectives' deadline ends the wait, with a message
    # naming the ranks and the host that stopped answering; mpirun ends once TCP gives up
    # on qf-node2's daemon (net.ipv4.tcp_retries2, set low on the cluster's hosts: README).
    cfg = experiment("cut.yaml")
    run(mpirun_on_both(["compile", cfg, "--set", "out_dir=out"]))
    before = quant_params("out")
    env = dict(os.environ, QFORGE_COLLECTIVE_TIMEOUT_S="5")  # -x: mpirun passes it to every host's ranks
    job, ranks = start_frozen_in_calibration(cfg, "out", env=env, forward=["QFORGE_COLLECTIVE_TIMEOUT_S"])
    firewall = "iptables -{op} INPUT -s 127.0.0.3 -j DROP && iptables -{op} OUTPUT -d 127.0.0.3 -j DROP"
    try:
        run(on_host(HOSTS[0], firewall.format(op="A")))
        send(ranks, signal.SIGCONT)
        cut = time.time()
        status, out = job.finish(timeout=90)
        ended = time.time() - cut
    finally:
        job.process.kill()
        send(ranks + processes_on(HOSTS[1], "orted"), signal.SIGKILL)  # what no message can reach now
        run(on_host(HOSTS[0], firewall.format(op="D")), expect=None)
    check(status == 6, f"exit {status}, expected 6 (a collective past its deadline):\n{out}")
    contains(out, "did not complete within 5 s", "no answer from ranks 2, 3 on qf-node2")
    check(ended < 60, f"the job took {ended:.0f} s to end after the cut")
    check_previous_artifacts_intact("out", before)


# --- SLURM with a slurmd per host ----------------------------------------------------------------

def slurm(command, expect=0, timeout=60):
    env = dict(os.environ, SLURM_CONF=os.path.join(CLUSTER, "slurm.conf"),
               OMPI_MCA_btl_tcp_if_include="qf0")  # sbatch hands the environment to the job
    return run(on_host(HOSTS[0], command), expect=expect, timeout=timeout, env=env)


def submit(cfg, *sets):
    out = slurm(shlex.join([QFORGE, "submit", cfg] + [a for s in sets for a in ("--set", s)]))
    job = re.search(r"submitted job (\d+)", out)
    check(job is not None, f"no job id in:\n{out}")
    return job.group(1), out


def slurm_output(argv):
    return slurm(shlex.join(argv), expect=None)


def wait_for(job, timeout=300):
    return qt.wait_for_slurm_job(job, timeout, output=slurm_output)


def test_submit_compile_on_2_nodes(work):
    cfg = experiment("job.yaml", 'resources: {nodes: 2, tasks_per_node: 2, time: "00:10:00"}\n')
    qt.run(["compile", cfg, "--set", "out_dir=one"], timeout=300)
    job, _ = submit(cfg, "out_dir=job_out")
    [record] = wait_for(job)
    log = read("job_out", f"slurm-{job}.out")
    check(record["JobState"] == "COMPLETED" and record["NodeList"] == "qf-node[1-2]", f"job {record}:\n{log}")
    contains(log, "4 rank(s) on qf-node[1-2]", "on 2 hosts: ranks 0, 1 on qf-node1, ranks 2, 3 on qf-node2")
    check(quant_params("job_out") == quant_params("one"), "the two-node job's quant_params.json differs from 1 rank's")


def test_submit_sweep_spreads_over_both_nodes(work):
    cfg = experiment("sweep.yaml", """resources: {tasks_per_node: 2, time: "00:10:00"}
sweep: [quantization_settings.weights.bits=4, quantization_settings.weights.bits=6]
""")
    job, _ = submit(cfg, "out_dir=sweep_out")
    records = wait_for(job)
    check(all(r["JobState"] == "COMPLETED" for r in records), f"array tasks: {records}")
    hosts = sorted(r["BatchHost"] for r in records)
    check(hosts == list(HOSTS), f"each node takes one task (each fills a node): {hosts}")
    for task in (0, 1):
        check(os.path.exists(os.path.join(work, "sweep_out", f"sweep-{task}", "quant_params.json")), f"task {task}")


def test_preempted_two_node_job_requeues_and_resumes(work):
    import torch
    cfg = fine_tune_experiment("ft.yaml", steps=120, extra='resources: {nodes: 2, tasks_per_node: 2, time: "00:10:00"}\n')
    # The uninterrupted result: the same job, never signalled (ranks placed alike, so its
    # reductions add in the same order).
    whole, _ = submit(cfg, "out_dir=whole")
    [record] = wait_for(whole)
    check(record["JobState"] == "COMPLETED", f"job {record}:\n{read('whole', f'slurm-{whole}.out')}")
    job, _ = submit(cfg, "out_dir=job_out")
    try:
        ranks = freeze_mid_fine_tune([cfg, "out_dir=job_out"], os.path.join(work, "job_out", "logs", "rank-0.log"),
                                     ranks=4, steps=120)
    except AssertionError as e:  # the job's own account of why its ranks were not there
        output = os.path.join(work, "job_out", f"slurm-{job}.out")
        raise AssertionError(f"{e}\njob {qt.slurm_job_records(job, slurm_output)}:\n"
                             f"{open(output).read() if os.path.exists(output) else '(no output)'}") from None
    qt.signal_frozen_through_slurm(job, ranks, output=slurm_output)
    [record] = wait_for(job)
    log = read("job_out", f"slurm-{job}.out")
    check(record["JobState"] == "COMPLETED" and record["Restarts"] == "1", f"job {record}:\n{log}")
    contains(log, "requeueing job", "restart 1", "resumed from")
    check_losses_match("whole", "job_out", rel=0)
    check(torch.equal(tuple_model_outputs("whole"), tuple_model_outputs("job_out")),
          "the requeued job's model differs from the uninterrupted run's")

