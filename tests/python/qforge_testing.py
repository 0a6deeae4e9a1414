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
def work_dir(prefix):
    """A fresh directory for one test (WORK while it runs), removed after it."""
    global WORK
    WORK = tempfile.mkdtemp(prefix=prefix)
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


def freeze_mid_fine_tune(markers, log, ranks, steps, after=5):
    """SIGSTOPs the run's ranks (found by `markers`: its config file, which is unique to
    this test's directory, and its out_dir) once `log` shows `after` fine-tuning steps, and
    returns their PIDs. The ranks are frozen for every look at the log, so however
    late this process runs on a loaded machine, the run cannot finish unseen."""
    deadline, looks, found = time.time() + 200, 0, []
    while True:
        found = ranks_of(*markers)
        if len(found) == ranks:
            send(found, signal.SIGSTOP)
            looks += 1
            done = open(log).read().count("fine-tune step ") if os.path.exists(log) else 0
            if after <= done < steps:
                return found
            send(found, signal.SIGCONT)
            check(done < steps, f"the run finished all {steps} steps before it could be frozen ({looks} looks)")
        check(time.time() < deadline, f"no {ranks} rank(s) at step {after} in 200 s (last found: {found})")
        time.sleep(0.02)
