"""What the Python tests of the qforge binary share (tests/cli, gpu, slurm, onnx, report): the
binary and the test assets named by ctest's environment, a working directory per test, qforge
run there alone or under mpirun, checks whose messages hold the output, and the ranks of a run
found and frozen mid-fine-tune. A test module's `work` fixture makes the directory:

    @pytest.fixture(autouse=True)
    def work():
        with qt.work_dir("qforge-cli-") as path:
            yield path

Tests take the directory as their `work` argument; the helpers here read it as WORK."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

QFORGE = os.environ["QFORGE_BIN"]
ASSETS = os.environ["QFORGE_TEST_ASSETS"]
SOURCE = os.environ["QFORGE_SOURCE_DIR"]
MPIEXEC = os.environ.get("MPIEXEC", "mpirun")
WORK = None  # the running test's directory (work_dir): qforge runs there, configs are written there


@contextlib.contextmanager
def work_dir(prefix, parent=None):
    """A fresh directory for one test (WORK while it runs) in `parent` (default: the
    system's temporary directory), removed after it."""
    global WORK
    WORK = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield WORK
    finally:
        path, WORK = WORK, None
        shutil.rmtree(path, ignore_errors=True)


def run(args, ranks=0, expect=0, timeout=90, with_status=False):
    """qforge's output (stdout, then stderr) for `args`, run in WORK alone (ranks 0) or on `ranks`
    ranks under MPIEXEC; fails unless it exits `expect` (None: any status). with_status: returns
    (exit status, output)."""
    cmd = ([MPIEXEC, "-np", str(ranks), "--oversubscribe"] if ranks else []) + [QFORGE] + args
    p = subprocess.run(cmd, cwd=WORK, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{' '.join(cmd)}: exit {p.returncode}, expected {expect}\n{out}")
    return (p.returncode, out) if with_status else out


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def contains(out, *fragments):
    for f in fragments:
        check(f in out, f"'{f}' not in output:\n{out}")


def write_config(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def compile_config(name, model, data, batch_size, target, extra=""):
    return write_config(name, f"""
model: {{path: {ASSETS}/{model}}}
calibration_inputs: {{files: [{ASSETS}/{data}], batch_size: {batch_size}}}
evaluation_inputs: {{files: [{ASSETS}/{data}], batch_size: {batch_size}}}
deployment_settings: {{target: {target}}}
quantization_settings: {{}}
""" + extra)


def artifacts(out):
    return sorted(os.listdir(os.path.join(WORK, out)))


def ranks_of(*markers):
    """The PIDs of the `qforge compile` ranks (not their launchers) whose command line holds every marker."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue  # a process that ended while we looked
        # "compile": not `qforge submit`, whose command line holds the same config and out_dir
        if os.path.basename(args[0]) == "qforge" and args[1:2] == ["compile"] and all(m in args for m in markers):
            pids.append(int(pid))
    return pids


def send(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


SLURM_FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                  "DEADLINE"}


def output_here(argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout


def slurm_job_records(job, output=output_here):
    """One dict per job (per array task) from `scontrol show job -o`; `output(argv)` runs a
    SLURM command where the cluster is reachable and returns what it printed."""
    out = output(["scontrol", "show", "job", "-o", job])
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if "JobId=" in line]


def wait_for_slurm_job(job, timeout=400, output=output_here):
    """The job's records once every part of it has finished; cancels it after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = slurm_job_records(job, output)
        if records and all(r["JobState"] in SLURM_FINISHED for r in records):
            return records
        time.sleep(1)
    output(["scancel", job])
    raise AssertionError(f"job {job} did not finish in {timeout} s: {slurm_job_records(job, output)}")


def signal_pending(pid, signum):
    """Whether `signum` waits, not yet delivered, at process `pid` (a frozen rank)."""
    with open(f"/proc/{pid}/status") as f:
        masks = re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)", f.read(), re.M)
    return any(int(m, 16) & (1 << (signum - 1)) for m in masks)


def signal_frozen_through_slurm(job, pids, output=output_here):
    """Sends SIGUSR1 through SLURM (`scancel --signal`, what SLURM sends before a time limit)
    to the job's frozen ranks `pids` and lets them go once it is pending in all of them, so
    the signal lands mid-run however long SLURM takes."""
    try:
        output(["scancel", "--signal=USR1", job])
        deadline = time.time() + 60
        while not all(signal_pending(pid, signal.SIGUSR1) for pid in pids):
            check(time.time() < deadline, "SLURM never delivered SIGUSR1 to the ranks")
            time.sleep(0.05)
    finally:
        send(pids, signal.SIGCONT)


def freeze_when(markers, ranks, ready, what, timeout=200, begun=lambda: True):
    """SIGSTOPs the run's `ranks` ranks (found by `markers`: its config file, which is unique
    to the test's directory, and its out_dir) and returns their PIDs once `ready()`, asked
    while they are frozen, is true; otherwise lets them go and looks again. Freezing for
    every look means that however late this process runs on a loaded machine, the run
    cannot pass the moment unseen. `ready` may raise (the moment has passed): the ranks
    are let go first. No rank is frozen before `begun()` (asked unfrozen) is true: a rank
    stopped and continued inside MPI's start-up can see a wait end early (EINTR, see
    signal(7)) where MPI's and PMIx's start-up code does not expect one."""
    deadline, looks, found = time.time() + timeout, 0, []
    while True:
        found = ranks_of(*markers) if begun() else []
        if len(found) == ranks:
            send(found, signal.SIGSTOP)
            looks += 1
            try:
                is_ready = ready()
            except BaseException:
                send(found, signal.SIGCONT)
                raise
            if is_ready:
                return found
            send(found, signal.SIGCONT)
        check(time.time() < deadline, f"no {ranks} rank(s) {what} in {timeout} s ({looks} looks, last found: {found})")
        time.sleep(0.02)


def log_grew(log):
    """Whether rank 0's `log` has grown since this call: the run has written to it, so it is
    past MPI's start-up (the log opens once the rank knows its number)."""
    size = os.path.getsize(log) if os.path.exists(log) else 0
    return lambda: os.path.exists(log) and os.path.getsize(log) > size


def freeze_mid_fine_tune(markers, log, ranks, steps, after=5):
    """freeze_when, once `log` shows `after` of the `steps` fine-tuning steps."""
    def ready():
        done = open(log).read().count("fine-tune step ") if os.path.exists(log) else 0
        check(done < steps, f"the run finished all {steps} steps before it could be frozen")
        return after <= done
    return freeze_when(markers, ranks, ready, f"at fine-tuning step {after}", begun=log_grew(log))
