"""The output directory as a user meets it: checked before any work, one compile
at a time, and a set of artifacts that a failure never leaves half-written.
Each test_* function is a ctest case (output_<case>). Cases that need a small file system
run in a mount namespace of their own (root; skipped otherwise)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import qforge_testing as qt  # noqa: E402
from qforge_testing import (ASSETS, MPIEXEC, QFORGE, check, compile_config, contains,  # noqa: E402
                            freeze_mid_fine_tune, run, send, write_config)

BACKTRACE = ("frame #", "Exception raised from", "terminate called", "Aborted")
FINE_TUNE = """
compile_options:
  fine_tune: {enabled: true, steps: 3000, batch_size: 8, lora_rank: 4, learning_rate: 0.005, warmup_steps: 1,
              log_every: 1}
"""


@pytest.fixture(autouse=True)
def work():
    with qt.work_dir("qforge-output-") as path:
        yield path
        if os.environ.get("QFORGE_TEST_OWN_MOUNTS") == "1":  # the small file systems the test mounted
            subprocess.run(f"grep -o ' {path}[^ ]*' /proc/self/mounts | xargs -r -n1 umount", shell=True)


def ran_in_own_mount_namespace(case):
    """Runs test_`case` again, in a pytest of its own in a private mount namespace, where it
    may mount small file systems that vanish with it. Returns True once it passed there (its
    failure is this test's failure, its skip this test's skip), and False inside that
    namespace, where the test goes on."""
    if os.environ.get("QFORGE_TEST_OWN_MOUNTS") == "1":
        return False
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    env = dict(os.environ, QFORGE_TEST_OWN_MOUNTS="1")
    results = os.path.join(qt.WORK, "namespace.xml")
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "pytest", "-q", "-s",
                        "-rs", "-p", "no:cacheprovider", f"--junitxml={results}",
                        f"{os.path.abspath(__file__)}::test_{case}"], env=env)
    check(p.returncode == 0, f"test_{case} in its own mount namespace: exit {p.returncode}")
    skipped = ElementTree.parse(results).getroot().find(".//testcase/skipped")
    if skipped is not None:
        pytest.skip(skipped.get("message"))
    return True


def small_disk(name, kib):
    """A tmpfs of `kib` KiB at WORK/name."""
    path = os.path.join(qt.WORK, name)
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", path], check=True)
    return path


def require_enforced_size(disk, kib):
    """Skips the test where the tmpfs grows past its size (a sandboxed kernel, such as
    gVisor's, does not enforce size=): no disk can be filled there."""
    if not fill(disk, 2 * kib):
        pytest.skip(f"this kernel lets a {kib} KiB tmpfs take {2 * kib} KiB: no full disk to test")
    os.remove(os.path.join(disk, "filler"))


def fill(disk, most_kib=1 << 20):
    """Writes zeros to disk/filler until the file system is full (True), or
    `most_kib` KiB went in without that (False)."""
    block = b"\0" * 4096
    with open(os.path.join(disk, "filler"), "wb", buffering=0) as f:  # unbuffered: close writes nothing
        try:
            for _ in range(most_kib // 4):
                f.write(block)
        except OSError:
            return True
    return False


def no_backtrace(out):
    for marker in BACKTRACE:
        check(marker not in out, f"a C++ backtrace or abort reached the user ('{marker}'):\n{out}")


def contents(directory):
    """Every file under `directory` (but the logs) with its bytes."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if "logs" not in os.path.relpath(path, directory).split(os.sep):
                found[os.path.relpath(path, directory)] = open(path, "rb").read()
    return found


def launch(args, ranks):
    cmd = ([MPIEXEC, "-np", str(ranks), "--oversubscribe"] if ranks > 1 else []) + [QFORGE] + args
    return subprocess.Popen(cmd, cwd=qt.WORK, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_refused_before_any_work(work):
    """A path that is a file, a read-only file system and a disk too small for the
    artifacts fail the dry run and the compile before calibration, with exit 8."""
    if ran_in_own_mount_namespace("refused_before_any_work"):
        return
    cfg = compile_config("out.yaml", "resnet18_traced.pt", "images.h5", 4, "tensorrt")
    write_config("a_file", "not a directory")
    read_only = os.path.join(work, "read_only")
    os.makedirs(read_only)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", read_only], check=True)
    tiny = small_disk("tiny", 256)
    for out_dir, why in ((os.path.join(work, "a_file"), "exists and is not a directory"),
                         (os.path.join(read_only, "out"), "cannot create the directory"),
                         (os.path.join(tiny, "out"), "no space left on device for the artifacts")):
        for ranks, dry in ((1, ["--dry-run"]), (2, [])):
            out = run(["compile", cfg, "--set", f"out_dir={out_dir}", "--set", f"logs_dir={work}/logs"] + dry,
                      ranks=ranks if ranks > 1 else 0, expect=8)
            contains(out, f"out_dir {out_dir}", why)
            check("calibration:" not in out, f"refused only after calibration:\n{out}")
            no_backtrace(out)
    print(f"tiny disk: {out.strip().splitlines()[0]}")


def test_full_disk_keeps_the_previous_artifacts(work):
    """The disk fills up while a compile fine-tunes (its ranks frozen, the disk
    filled, the ranks let go): the write fails with "No space left on device"
    naming the file, exit 8, on 1 and 2 ranks; the earlier artifacts stay as
    they were, and nothing temporary is left."""
    if ran_in_own_mount_namespace("full_disk_keeps_the_previous_artifacts"):
        return
    disk = small_disk("disk", 16 * 1024)
    require_enforced_size(disk, 16 * 1024)
    out_dir = os.path.join(disk, "out")
    cfg = compile_config("disk.yaml", "tuple_model.pt", "text_tuple.h5", 5, "libtorch", FINE_TUNE)
    run(["compile", cfg, "--set", f"out_dir={out_dir}", "--set", f"logs_dir={work}/logs_first",
         "--set", "compile_options.fine_tune.steps=20"], ranks=2, timeout=300)
    before = contents(out_dir)
    check("model.qforge.pt" in before and "report.json" in before, f"the first compile's artifacts: {sorted(before)}")
    for ranks in (1, 2):
        logs = os.path.join(work, f"logs_{ranks}")
        p = launch(["compile", cfg, "--set", f"out_dir={out_dir}", "--set", f"logs_dir={logs}"], ranks)
        pids = freeze_mid_fine_tune([cfg, f"logs_dir={logs}"], os.path.join(logs, "rank-0.log"), ranks, 3000)
        check(fill(disk), "the disk filled up")
        send(pids, signal.SIGCONT)
        out = p.communicate(timeout=300)[0]
        check(p.returncode == 8, f"{ranks} rank(s): a full disk exits 8, got {p.returncode}:\n{out}")
        contains(out, "No space left on device", out_dir + "/")
        no_backtrace(out)
        check(contents(out_dir) == before, f"{ranks} rank(s): the earlier artifacts changed: {sorted(contents(out_dir))}")
        os.remove(os.path.join(disk, "filler"))
        print(f"{ranks} rank(s): {[l for l in out.splitlines() if 'No space' in l][0]}")


def test_one_compile_per_output_directory(work):
    """A second compile into a directory another one is writing is refused with the
    holder's host and PID, and writes nothing there; a lock whose process is gone
    is taken over with a warning."""
    cfg = compile_config("lock.yaml", "tuple_model.pt", "text_tuple.h5", 5, "libtorch", FINE_TUNE)
    out_dir = os.path.join(work, "shared")
    first = launch(["compile", cfg, "--set", f"out_dir={out_dir}"], 2)
    pids = freeze_mid_fine_tune([cfg, f"out_dir={out_dir}"], os.path.join(out_dir, "logs", "rank-0.log"), 2, 3000)
    try:
        logs_before = open(os.path.join(out_dir, "logs", "rank-0.log"), "rb").read()
        for ranks, dry in ((2, []), (1, ["--dry-run"])):
            out = run(["compile", cfg, "--set", f"out_dir={out_dir}"] + dry, ranks=ranks if ranks > 1 else 0, expect=8)
            contains(out, "another compile is writing there", f"host {socket.gethostname()}", "PID ")
            holder = int(out.split("PID ")[1].split(",")[0].split(")")[0])
            check(holder in pids, f"the lock names a rank of the first compile ({pids}), not {holder}")
            no_backtrace(out)
        check(open(os.path.join(out_dir, "logs", "rank-0.log"), "rb").read() == logs_before,
              "the refused compile wrote into the first one's log")
    finally:
        send(pids, signal.SIGCONT)
    out = first.communicate(timeout=300)[0]
    check(first.returncode == 0, f"the first compile ends well, exit {first.returncode}:\n{out}")
    check(not os.path.exists(os.path.join(out_dir, ".qforge.lock")), "the lock is released at the end")
    # A lock left by a process that is gone (SIGKILL, a crashed node) on this host.
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(out_dir, ".qforge.lock"), "w") as f:
        f.write(f"host={socket.gethostname()}\npid={dead.pid}\njob=\nstarted=yesterday\n")
    out = run(["compile", cfg, "--set", f"out_dir={out_dir}", "--set", "compile_options.fine_tune.steps=5"])
    contains(out, "taking over the lock", f"PID {dead.pid} no longer runs")
    # An empty one (its writer killed between creating and filling it), once it is old.
    lock = os.path.join(out_dir, ".qforge.lock")
    open(lock, "w").close()
    os.utime(lock, (time.time() - 60, time.time() - 60))
    contains(run(["compile", cfg, "--set", f"out_dir={out_dir}", "--set", "compile_options.fine_tune.steps=5"]),
             "taking over the lock", "an empty lock file")
    # One held on another host cannot be checked: refused.
    with open(os.path.join(out_dir, ".qforge.lock"), "w") as f:
        f.write("host=elsewhere\npid=1\njob=\nstarted=now\n")
    contains(run(["compile", cfg, "--set", f"out_dir={out_dir}"], expect=8), "host elsewhere, PID 1")


def test_nothing_quantized_is_an_error(work):
    """TensorRT-LLM's groups of 128 fit none of a small model's layers: the compile
    names each layer and the fix (exit 3) before calibrating, and writes nothing;
    layers all skipped on purpose are a float compile, not an error."""
    cfg = compile_config("none.yaml", "tuple_model.pt", "text_tuple.h5", 5, "tensorrt_llm")
    for dry in (["--dry-run"], []):
        out = run(["compile", cfg, "--set", "out_dir=none"] + dry, ranks=2, expect=3)
        contains(out, "no layer would be quantized", "layer 'proj'", "not a multiple of group_size 128",
                 "fix: a group_size that divides")
        check("calibration:" not in out, f"found only after calibration:\n{out}")
    check(not os.path.exists(os.path.join(work, "none", "model.qforge.pt")), "a refused compile writes no model")
    out = run(["compile", cfg, "--set", "out_dir=none", "--set", "layer_quantization_settings={'*': {skip: true}}"])
    layers = json.load(open(os.path.join(work, "none", "quant_params.json")))["layers"]
    check(all(l["decision"] == "float" for l in layers), "every layer skipped on purpose stays float")
    # One layer a setting cannot take, the others quantized: a warning names it.
    some = write_config("some.yaml", f"""
model: {{path: {ASSETS}/tuple_model.pt}}
calibration_inputs: {{files: [{ASSETS}/text_tuple.h5], batch_size: 5}}
deployment_settings: {{target: libtorch}}
quantization_settings: {{weights: {{granularity: group, group_size: 16}}}}
layer_quantization_settings: {{head: {{weights: {{group_size: 64}}}}}}
""")
    out = run(["compile", some, "--set", "out_dir=some"])
    contains(out, "qforge: warning: layer 'head' stays in floating point: 32 inputs per output channel are not a multiple")
