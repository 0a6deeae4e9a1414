"""The qforge executable: where it is, and running it on 1 process, under mpirun, or with srun in
a SLURM allocation, its output streamed to the caller and its exit code turned into an exception.
There is one engine: this package writes what it reads (TorchScript, HDF5, YAML) and runs it."""
import os
import re
import shutil
import signal
import subprocess
import sys

from .errors import EngineNotFound, error_for_exit

__all__ = ["executable", "run", "launch_command"]

_INSTALL_HINT = ("build it with `bash jobs/setup.sh` in the qforge repository, or point QFORGE_BIN at the "
                 "qforge executable (or put it on PATH)")


def executable():
    """The qforge executable: $QFORGE_BIN, the build/ of the repository this package sits in, or PATH."""
    chosen = os.environ.get("QFORGE_BIN")
    if chosen:  # the user's choice, and no other
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return os.path.abspath(chosen)
        raise EngineNotFound(f"QFORGE_BIN={chosen} is not an executable file; {_INSTALL_HINT}")
    here = os.path.dirname(os.path.abspath(__file__))
    for c in (os.path.join(here, "..", "..", "..", "build", "qforge"),       # a source tree's builds
              os.path.join(here, "..", "..", "..", "build-gpu", "qforge"),
              os.path.join(here, "..", "..", "..", "..", "bin", "qforge"),   # <prefix>/share/qforge/python
              shutil.which("qforge")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise EngineNotFound(f"no qforge executable found; {_INSTALL_HINT}")


def _mpirun():
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    if not found:
        raise EngineNotFound("ranks > 1 needs an MPI launcher (mpirun): install Open MPI "
                             "(Debian: apt-get install openmpi-bin), or compile with ranks=1")
    return found


def launch_command(args, ranks=1, launcher=None):
    """The command line running `qforge args` on `ranks` processes: as is for 1, mpirun for more,
    srun inside a SLURM allocation (all its tasks when `ranks` is None)."""
    engine = [executable()] + list(args)
    in_allocation = "SLURM_JOB_ID" in os.environ and shutil.which("srun")
    if launcher == "srun" or (launcher is None and in_allocation and ranks is None):
        tasks = ranks or int(os.environ.get("SLURM_NTASKS", "1"))
        return ["srun", "--mpi=pmix", "--kill-on-bad-exit=1", "-n", str(tasks)] + engine
    ranks = ranks or 1
    if ranks == 1 and launcher != "mpirun":
        return engine
    command = [_mpirun(), "-np", str(ranks)]
    if ranks > (os.cpu_count() or 1):
        command.append("--oversubscribe")
    return command + engine


def _environment():
    env = dict(os.environ)
    if os.geteuid() == 0:  # Open MPI refuses root otherwise
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    return env


class _Progress:
    """The engine's lines to the caller as they come; fine-tuning's step lines drawn as a tqdm bar
    where tqdm is installed."""

    STEP = re.compile(r"step\s+(\d+)\s*/\s*(\d+)")

    def __init__(self, show):
        self.show = show
        self.bar = None
        try:
            import tqdm  # noqa: F401
            self.tqdm = tqdm.tqdm if show else None
        except ImportError:
            self.tqdm = None

    def line(self, text):
        if not self.show:
            return
        match = self.STEP.search(text)
        if match and self.tqdm:
            step, steps = int(match.group(1)), int(match.group(2))
            if self.bar is None:
                self.bar = self.tqdm(total=steps, desc="fine-tune", unit="step")
            self.bar.n = step
            self.bar.set_postfix_str(text.strip()[-60:])
            self.bar.refresh()
            return
        sys.stdout.write(text)
        sys.stdout.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(args, ranks=1, launcher=None, progress=True, cwd=None):
    """Runs qforge; returns its output. A nonzero exit raises the exception of its code with the
    engine's error lines; Ctrl-C ends every rank (SIGTERM to the launcher's process group) first."""
    command = launch_command(args, ranks, launcher)
    out = _Progress(bool(progress))
    lines = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               env=_environment(), cwd=cwd, start_new_session=True)
    try:
        for text in process.stdout:
            lines.append(text)
            out.line(text)
        code = process.wait()
    except KeyboardInterrupt:
        _stop(process)
        raise
    finally:
        out.close()
    log = "".join(lines)
    if code != 0:
        errors = [l.strip() for l in lines if "error:" in l] or [l.strip() for l in lines[-3:]]
        message = "\n".join(errors) or f"qforge exited {code}"
        raise error_for_exit(code, message, log)
    return log


def _stop(process):
    """SIGTERM to the whole process group (mpirun forwards it to the ranks), SIGKILL after 20 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
