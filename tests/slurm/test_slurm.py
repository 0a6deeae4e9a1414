"""SLURM tests: `qforge submit` against the one-node cluster tests/slurm/cluster.sh
starts (SLURM_CONF names it). Each test_* function is a ctest case (slurm_<case>);
they are skipped when no cluster is running."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import (ASSETS, MPIEXEC, QFORGE, check, contains, freeze_mid_fine_tune,  # noqa: E402
                            send, write_config)

@pytest.fixture(autouse=True)
def work():
    if not os.path.exists(os.environ.get("SLURM_CONF", "")):
        pytest.skip("no SLURM cluster running (tests/slurm/cluster.sh start)")
    with qt.work_dir("qforge-slurm-") as path:
        yield path


def start_submit(config, *sets):
    cmd = [QFORGE, "submit", config] + [a for s in sets for a in ("--set", s)]
    return cmd, subprocess.Popen(cmd, cwd=qt.WORK, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def submit(config, *sets, expect=0, started=None):
    """Submits (or finishes a start_submit) and returns the job id and the output."""
    cmd, p = started or start_submit(config, *sets)
    out = p.communicate(timeout=60)[0]
    check(p.returncode == expect, f"{' '.join(cmd)}: exit {p.returncode}, expected {expect}\n{out}")
    if expect != 0:
        return None, out
    job = re.search(r"submitted job (\d+)", out)
    check(job is not None, f"no job id in:\n{out}")
    return job.group(1), out


def wait_for(job, timeout=400):
    return qt.wait_for_slurm_job(job, timeout)


def read(*parts):
    with open(os.path.join(qt.WORK, *parts)) as f:
        return f.read()


def experiment(name, extra=""):
    return write_config(name, f"""
model: {{path: {ASSETS}/tuple_model.pt}}
calibration_inputs: {{files: [{ASSETS}/text_tuple.h5], batch_size: 5}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{weights: {{bits: 8}}}}
resources: {{tasks_per_node: 2, time: "00:15:00"}}
""" + extra)


def model_outputs(out_dir):
    import torch
    ids = torch.arange(24).reshape(2, 12) % 100
    return torch.jit.load(os.path.join(qt.WORK, out_dir, "model.qforge.pt"))(ids, torch.ones_like(ids))


def test_compile_job_on_2_tasks(work):
    job, out = submit(experiment("job.yaml", "out_dir: job_out\n"))
    [record] = wait_for(job)
    log = read("job_out", f"slurm-{job}.out")
    check(record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", f"job {record}:\n{log}")
    contains(log, "compiled 'tuple_model' on 2 rank(s)", "finished with exit status 0")
    report = json.load(open(os.path.join(work, "job_out", "report.json")))
    check(report["ranks"] == 2, f"the job ran on {report['ranks']} rank(s), expected 2")
    check(sorted(os.listdir(os.path.join(work, "job_out", "logs"))) == ["rank-0.log", "rank-1.log"], "a log per rank")
    check(model_outputs("job_out").shape[0] == 2, "the compiled model runs in PyTorch")
    script = read("job_out", "submit.sbatch")
    contains(script, "#SBATCH --ntasks-per-node=2", "#SBATCH --time=00:15:00", "srun --mpi=pmix")


def test_python_call_submits_a_job_and_returns_the_module(work):
    # qforge.compile(..., launcher=qforge.Slurm(...)): submitted with qforge submit, a job handle
    # back; its result is the compiled module, byte-identical to the same call run here on 2 ranks.
    import torch
    import qforge
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    data = [torch.randn(6, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    settings = dict(calibration_inputs=data, deployment_settings=qforge.LibTorchSettings(), quantization_settings={},
                    progress=False)
    job = qforge.compile(model, out_dir=os.path.join(work, "by_slurm"),
                         launcher=qforge.Slurm(tasks_per_node=2, time="00:15:00"), **settings)
    check(isinstance(job, qforge.SlurmJob) and job.job_id, f"not a job handle: {job!r}")
    compiled = job.result(timeout=400)
    check(job.status() == "COMPLETED", f"job {job.job_id}: {job.status()}")
    here = qforge.compile(model, out_dir=os.path.join(work, "here"), ranks=2, **settings)
    for name in ("quant_params.json",):
        check(read("by_slurm", name) == read("here", name), f"{name} differs between the SLURM job and 2 local ranks")
    x = torch.randn(3, 8)
    with torch.no_grad():
        check(torch.equal(compiled(x), here(x)), "the job's compiled module computes differently")
    check(compiled.report["ranks"] == 2, f"the job ran {compiled.report['ranks']} rank(s)")


def test_sweep_array_job_two_settings(work):
    job, out = submit(experiment("sweep.yaml", """out_dir: sweep_out
sweep:
  - quantization_settings.weights.bits=4
  - [quantization_settings.weights.bits=6, quantization_settings.weights.granularity=tensor]
"""))
    contains(out, "task 0: sweep_out/sweep-0", "task 1: sweep_out/sweep-1")
    records = wait_for(job)
    check(len(records) == 2, f"an array of 2 tasks, got {records}")
    for r in records:
        check(r["JobState"] == "COMPLETED", f"array task {r.get('ArrayTaskId')}: {r}")
    bits = []
    for task in (0, 1):
        params = json.load(open(os.path.join(work, "sweep_out", f"sweep-{task}", "quant_params.json")))
        layer = next(l for l in params["layers"] if l["name"] == "proj")
        bits.append((layer["weights"]["bits"], layer["weights"]["granularity"]))
        contains(read("sweep_out", f"slurm-{job}_{task}.out"), f"--sweep-task {task}")
        check(os.path.exists(os.path.join(work, "sweep_out", f"sweep-{task}", "logs", "rank-1.log")), "logs per task")
    check(bits == [(4, "channel"), (6, "tensor")], f"each task compiled its own setting: {bits}")


def test_signalled_job_requeues_and_resumes(work):
    # SLURM's --signal (here sent at once with scancel) reaches the ranks mid-fine-tune:
    # they checkpoint, the script requeues the job, the restarted job resumes and
    # ends where a run never stopped ends.
    cfg = experiment("ft.yaml", """
compile_options:
  fine_tune: {enabled: true, steps: 3000, batch_size: 8, lora_rank: 4, learning_rate: 0.005, warmup_steps: 1,
              log_every: 1, lora_dropout: 0.1}
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as the job's ranks (cpus_per_task: 1)
    subprocess.run([MPIEXEC, "-np", "2", "--oversubscribe", QFORGE, "compile", cfg, "--set", "out_dir=ft_whole"],
                   cwd=work, env=env, check=True, capture_output=True, timeout=400)
    # The job may reach its fine-tuning before `qforge submit` has returned: look
    # for its ranks while submitting.
    submitting = start_submit(cfg, "out_dir=ft_job")
    ranks = freeze_mid_fine_tune([cfg, "out_dir=ft_job"], os.path.join(work, "ft_job", "logs", "rank-0.log"),
                                 ranks=2, steps=3000)
    try:
        job, _ = submit(None, started=submitting)
    except BaseException:
        send(ranks, signal.SIGCONT)
        raise
    qt.signal_frozen_through_slurm(job, ranks)
    [record] = wait_for(job)
    log = read("ft_job", f"slurm-{job}.out")
    check(record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", f"job {record}:\n{log}")
    check(record["Restarts"] == "1", f"the job requeued once, Restarts={record['Restarts']}:\n{log}")
    contains(log, "requeueing job", "restart 1", "resumed from")
    whole = json.load(open(os.path.join(work, "ft_whole", "report.json")))["fine_tune"]
    parts = json.load(open(os.path.join(work, "ft_job", "report.json")))["fine_tune"]
    check(whole["loss"] == parts["loss"], "the requeued job's losses differ from the uninterrupted run's")
    import torch
    check(torch.equal(model_outputs("ft_whole"), model_outputs("ft_job")), "requeued and uninterrupted models differ")


def test_failing_job_exits_nonzero_with_its_error(work):
    with open(os.path.join(work, "broken.h5"), "w") as f:
        f.write("not HDF5")
    cfg = experiment("bad.yaml", "out_dir: bad_out\n")
    job, _ = submit(cfg, f"calibration_inputs.files=[{work}/broken.h5]")
    [record] = wait_for(job)
    log = read("bad_out", f"slurm-{job}.out")
    check(record["JobState"] == "FAILED" and record["ExitCode"] == "4:0",
          f"a data error fails the job with exit status 4: {record}:\n{log}")
    contains(log, "broken.h5: not an HDF5 file", "finished with exit status 4")
    # A sweep setting that does not load stops the submission: nothing queued, nothing written.
    _, out = submit(experiment("badsweep.yaml", "out_dir: badsweep_out\nsweep: [quantization_settings.weights.bitz=4]\n"),
                    expect=3)
    contains(out, "sweep[0]", "unknown key 'quantization_settings.weights.bitz'")
    check(not os.path.exists(os.path.join(work, "badsweep_out")), "a refused submission writes nothing")
