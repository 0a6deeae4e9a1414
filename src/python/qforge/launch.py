"""Where a compile runs when it does not run here: a SLURM job submitted by `qforge submit`, with a
handle to wait for it and take its result."""
import os
import re
import subprocess
import time

from . import engine
from .errors import QforgeError, error_for_exit

__all__ = ["Slurm", "SlurmJob"]


class Slurm:
    """Submit the compile as a SLURM job (its preemption and requeue handled as for the CLI):
    nodes, gpus_per_node, tasks_per_node, cpus_per_task, memory ("16G"), time ("01:00:00"),
    partition, account: the experiment's `resources`."""

    def __init__(self, nodes=1, gpus_per_node=0, tasks_per_node=0, cpus_per_task=1, memory="", time="",
                 partition="", account=""):
        self.resources = {"nodes": nodes, "gpus_per_node": gpus_per_node, "tasks_per_node": tasks_per_node,
                          "cpus_per_task": cpus_per_task, "memory": memory, "time": time, "partition": partition,
                          "account": account}

    def submit(self, config_path, finish):
        out = engine.run(["submit", config_path], progress=False)
        match = re.search(r"submitted job (\d+)", out)
        if not match:
            raise QforgeError(f"qforge submit gave no job id:\n{out}")
        return SlurmJob(match.group(1), finish, out)


class SlurmJob:
    """A submitted compile: status() is SLURM's state, wait() blocks until it ends, result() gives the
    compiled module (raising the engine's error when the job failed)."""

    def __init__(self, job_id, finish, submit_output=""):
        self.job_id, self._finish, self.submit_output = job_id, finish, submit_output

    def _record(self):
        """The job's fields from `scontrol show job` (kept for a while after it ends), else sacct's."""
        p = subprocess.run(["scontrol", "show", "job", "-o", self.job_id], capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if "JobId=" in line:
                return dict(re.findall(r"(\w+)=(\S*)", line))
        p = subprocess.run(["sacct", "-n", "-X", "-j", self.job_id, "-o", "State,ExitCode", "-P"],
                           capture_output=True, text=True)
        line = p.stdout.strip().splitlines()
        if line and "|" in line[0]:
            state, code = line[0].split("|")[:2]
            return {"JobState": state.split()[0], "ExitCode": code}
        return {}

    def status(self):
        """SLURM's state of the job: PENDING, RUNNING, COMPLETED, FAILED, ... (UNKNOWN once forgotten)."""
        return self._record().get("JobState", "UNKNOWN")

    def wait(self, timeout=None, poll=2.0):
        start = time.time()
        while self.status() in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED"):
            if timeout is not None and time.time() - start > timeout:
                raise TimeoutError(f"SLURM job {self.job_id} is still {self.status()} after {timeout} s")
            time.sleep(poll)
        return self.status()

    def exit_code(self):
        code = self._record().get("ExitCode", "")
        return int(code.split(":")[0]) if code.split(":")[0].isdigit() else None

    def result(self, timeout=None):
        self.wait(timeout)
        return self._finish(self)


def slurm_log_error(log_path):
    """The engine's error lines in a job's log."""
    try:
        with open(log_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return "\n".join(l for l in lines if "error:" in l) or "\n".join(lines[-5:])


def job_failure(job, out_dir):
    """The exception of a job that wrote no report."""
    log = os.path.join(out_dir, f"slurm-{job.job_id}.out")
    code = job.exit_code() or 1
    return error_for_exit(code, slurm_log_error(log) or f"SLURM job {job.job_id} ended {job.status()}", "")
