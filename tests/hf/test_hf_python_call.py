"""Transformers models handed to qforge.compile as users hold them, on the GPU where there is one: a
Llama called with keyword arguments (`input_ids`, `use_cache=False` as a constant) whose logits a
forward_fn takes, and BERT called with a dict of `input_ids` and `attention_mask` (its output a dict).
Each compiled module runs in the caller's process on the model's device, and the engine's CLI given
the experiment the call wrote gives byte-identical quantization parameters. Runs where transformers is
installed (the GPU image); skipped elsewhere."""
import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "python"))
import qforge  # noqa: E402
import test_hf_models as hf  # noqa: E402

QFORGE = os.environ.get("QFORGE_BIN") or os.path.join(HERE, "..", "..", "build", "qforge")


@pytest.fixture
def work(tmp_path, monkeypatch):
    if hf.transformers is None:
        pytest.skip("transformers is not installed (the GPU image has it)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QFORGE_BIN", QFORGE)
    return tmp_path


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def same_as_the_cli(compiled, work):
    """The experiment the call wrote, run by the CLI into another directory: the same parameters."""
    inputs = compiled.out_dir + ".inputs"
    again = os.path.join(str(work), "cli")
    p = subprocess.run([QFORGE, "compile", os.path.join(inputs, "experiment.yaml"), "--set", f"out_dir={again}"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert filecmp.cmp(os.path.join(compiled.out_dir, "quant_params.json"), os.path.join(again, "quant_params.json"),
                       shallow=False)


def test_llama_with_keyword_arguments_and_a_forward_fn(work):
    model = hf.decoder("llama_sdpa").to(device())
    ids = [torch.from_numpy(hf.ids(8, length, seed)).to(device()) for seed, length in ((1, 16), (2, 16), (3, 32))]
    compiled = qforge.compile(model, calibration_inputs=[{"input_ids": i, "use_cache": False} for i in ids],
                              evaluation_inputs=[{"input_ids": ids[0], "use_cache": False}],
                              forward_fn=lambda m, args, kwargs: m(*args, **kwargs).logits,
                              deployment_settings=qforge.OnnxRuntimeSettings(),
                              quantization_settings=qforge.QuantizationSettings(), out_dir="llama", progress=False)
    fresh = torch.from_numpy(hf.ids(3, 24, 5)).to(device())
    with torch.no_grad():
        out, reference = compiled(input_ids=fresh, use_cache=False), model(input_ids=fresh, use_cache=False).logits
    assert out.device.type == device().type
    assert compiled.report["evaluation"]["output_sqnr_db"] > 15
    assert compiled.report["onnx"]["fresh_inputs"]["worst_output_sqnr_db"] > 30
    agreement = (out.argmax(-1) == reference.argmax(-1)).float().mean().item()
    assert agreement > 0.9, agreement
    same_as_the_cli(compiled, work)


def test_bert_with_a_dict_of_ids_and_mask(work):
    torch.manual_seed(0)
    model = hf.transformers.BertForSequenceClassification(hf.transformers.BertConfig(
        vocab_size=hf.VOCAB, hidden_size=hf.WIDTH, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=2 * hf.WIDTH, num_labels=3)).eval().to(device())

    def batch(rows, length, seed):
        mask = np.ones((rows, length), np.int64)
        mask[:, length - 3:] = np.random.default_rng(seed).integers(0, 2, (rows, 3))
        return {"input_ids": torch.from_numpy(hf.ids(rows, length, seed)).to(device()),
                "attention_mask": torch.from_numpy(mask).to(device())}

    calibration = [batch(8, 16, 1), batch(8, 16, 2), batch(8, 32, 3)]
    compiled = qforge.compile(model, calibration_inputs=calibration, evaluation_inputs=[batch(8, 16, 4)],
                              deployment_settings=qforge.OnnxRuntimeSettings(),
                              quantization_settings=qforge.QuantizationSettings(), out_dir="bert", progress=False)
    fresh = batch(3, 24, 5)
    with torch.no_grad():
        out, reference = compiled(**fresh), model(**fresh).logits
    logits = out["logits"] if isinstance(out, dict) else out
    assert logits.device.type == device().type
    assert np.isfinite(compiled.report["evaluation"]["output_sqnr_db"])
    assert compiled.report["onnx"]["fresh_inputs"]["worst_output_sqnr_db"] > 30
    assert torch.nn.functional.cosine_similarity(logits.float().flatten(), reference.float().flatten(), 0) > 0.95
    same_as_the_cli(compiled, work)
