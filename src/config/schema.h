// The schema of the YAML experiment, described once. The same describe()
// functions drive the reader, the writer of the resolved config and the key
// reference in docs/keys.md (and the Python settings), so they cannot drift apart.
#pragma once
#include "qforge/config.h"

namespace qforge::schema {

template <class V>
void describe(V& v, ModelSettings& s) {
  v("path", s.path, "TorchScript model file (saved with torch.jit.save)");
  v("method", s.method, "method to compile (clika_compile's module_or_func)");
}

template <class V>
void describe(V& v, TracingSettings& s) {
  v("files", s.files, "HDF5 files of tracing samples; empty = calibration files");
  v("groups", s.groups, "shape groups to trace with; empty = all");
  v("batch_sizes", s.batch_sizes, "batch sizes traced; two differing sizes make axis 0 dynamic");
}

template <class V>
void describe(V& v, CalibrationSettings& s) {
  v("files", s.files, "HDF5 calibration files (layout in docs/data.md), sharded across ranks");
  v("groups", s.groups, "shape groups to use; empty = all");
  v("batch_size", s.batch_size, "rows per model call");
  v("max_samples", s.max_samples, "rows used in total; 0 = all");
  v("prefetch", s.prefetch, "batches read ahead per rank (bounds memory)");
  v("check_finite", s.check_finite, "reject rows holding NaN or Inf");
}

template <class V>
void describe(V& v, TransformStep& s) {
  v("op", s.op, "cast | scale | normalize");
  v("inputs", s.inputs, "input names the step applies to; empty = all");
  v("dtype", s.dtype, "cast: float32 | float64 | float16 | bfloat16 | int64 | int32 | int16 | int8 | uint8 | bool");
  v("factor", s.factor, "scale: multiplier");
  v("mean", s.mean, "normalize: per-channel mean");
  v("std", s.std, "normalize: per-channel standard deviation");
  v("axis", s.axis, "normalize: channel axis of the batched tensor");
}

template <class V>
void describe(V& v, ForwardSettings& s) {
  v("kwargs", s.kwargs, "extra static keyword arguments of every call (clika_compile's forward_fn)");
}

template <class V>
void describe(V& v, DeploymentSettings& s) {
  v("target", s.target, "none | tensorrt | onnxruntime | openvino | tensorrt_llm | libtorch");
  v("onnx", s.onnx, "write model.qforge.onnx (QDQ); null = for tensorrt, onnxruntime, openvino, tensorrt_llm");
  v("opset", s.opset, "ONNX opset, 13..21; 0 = 17, or 21 when weights are 4-bit");
  v("evaluate_onnx", s.evaluate_onnx, "run the ONNX file on evaluation_inputs in onnxruntime too, where one is found");
}

template <class V>
void describe(V& v, GptqSettings& s) {
  v("dampening", s.dampening, "added to the Hessian's diagonal, as a share of the diagonal's mean");
  v("act_order", s.act_order,
    "quantize inputs in order of decreasing Hessian diagonal (groups then take their parameters from the "
    "unquantized weight, so they stay contiguous)");
  v("block_size", s.block_size, "columns whose updates are applied together (speed)");
  v("blocks", s.blocks,
    "auto: solve the model's repeated blocks in order, block k+1 calibrated on the outputs of the solved block k "
    "(found in the module tree: the same-type children of one container) | none: every layer on the float "
    "model's inputs | a glob naming the blocks (layers.*)");
  v("offload", s.offload,
    "where each rank keeps its shard's block inputs from one block to the next: auto (the GPU while they fit in "
    "half its free memory, else pinned host memory) | cpu | none (the GPU)");
}

template <class V>
void describe(V& v, AwqSettings& s) {
  v("grid", s.grid,
    "exponents tried per group of layers sharing an input: s = mean|x|^a for a = 0, 1/grid, ..., "
    "(grid-1)/grid, keeping the one whose quantized outputs err least on the calibration data");
  v("blocks", s.blocks, "as gptq.blocks: the layers searched together, in order (bounds memory)");
}

template <class V>
void describe(V& v, SmoothingSettings& s) {
  v("method", s.method, "smoothquant");
  v("alpha", s.alpha,
    "migration strength, 0..1: each input channel is divided by s = max|x|^alpha / max|W|^(1-alpha), and the "
    "weights multiplied by it");
}

template <class V>
void describe(V& v, TensorQuantSettings& s) {
  v("enabled", s.enabled, "false keeps these tensors in floating point");
  v("bits", s.bits, "bit width, 2..8");
  v("granularity", s.granularity, "tensor | channel | group");
  v("group_size", s.group_size, "input elements per group (granularity group)");
  v("symmetric", s.symmetric, "zero point fixed at 0");
  v("signed", s.is_signed, "signed integer range (else unsigned)");
  v("observer", s.observer, "minmax | percentile | entropy | mse");
  v("percentile", s.percentile, "percentile kept by observer percentile");
  v("histogram_bins", s.histogram_bins,
    "histogram bins of entropy / percentile / mse observers: at least this many, at most twice as many, over "
    "[0, the largest magnitude]");
}

template <class V>
void describe(V& v, WeightQuantSettings& s) {
  describe(v, static_cast<TensorQuantSettings&>(s));
  v("algorithm", s.algorithm,
    "rtn (round to nearest) | gptq (rounding that makes up for each input's error through the Hessian of the "
    "calibration inputs; Linear layers) | awq (per-input-channel scales, searched on the calibration inputs, "
    "that shield the channels of large activations; folded into the preceding norm or layer; Linear layers)");
  v("gptq", s.gptq, "settings of algorithm gptq");
  v("awq", s.awq, "settings of algorithm awq");
}

template <class V>
void describe(V& v, ActivationQuantSettings& s) {
  describe(v, static_cast<TensorQuantSettings&>(s));
  v("smoothing", s.smoothing,
    "SmoothQuant before activation quantization: {method: smoothquant, alpha: 0.5}, folded into the preceding "
    "norm or layer (Linear layers); null = none");
}

template <class V>
void describe(V& v, QuantizationSettings& s) {
  v("weights", s.weights, "weight quantization");
  v("activations", s.activations, "activation quantization");
  v("sensitivity_threshold", s.sensitivity_threshold,
    "relative output error above which a layer stays in floating point; null = off");
}

template <class V>
void describe(V& v, PruningSettings& s) {
  v("method", s.method,
    "magnitude (the smallest |w| of the layer) | wanda (the smallest |w|·‖x‖ of each output row, x the "
    "calibration inputs; Linear layers) | sparsegpt (chosen and made up for through the Hessian of the "
    "calibration inputs, as GPTQ rounds; Linear layers); others fall back to magnitude, with a note | "
    "structured (whole channels and MLP neurons removed from the model, with every layer the graph couples "
    "to them: residual adds, depthwise convolutions, concatenation, flatten into a Linear, SwiGLU)");
  v("sparsity", s.sparsity,
    "share of each layer's weights set to zero, 0 to below 1 (pattern unstructured); structured: share of each "
    "channel group's channels removed");
  v("importance", s.importance,
    "structured: how channels are ranked, summed over the group's layers: l1 | l2 (norms of the weights "
    "writing and reading each channel) | activation (‖x‖ of each channel over the calibration inputs times the "
    "norm of the weights reading it) | taylor (first-order Taylor estimate of the loss change when the channel is "
    "removed, (Σ ∂L/∂x·x)² summed over the calibration rows; L: cross-entropy of the labels, else of the model's "
    "own top predictions)");
  v("pattern", s.pattern,
    "unstructured | N:M (2:4, 4:8): N weights kept of every M consecutive inputs of an output row (input channels "
    "at each kernel position of a convolution); sparsity is then 1 - N/M");
  v("dampening", s.dampening, "sparsegpt: added to the Hessian's diagonal, as a share of the diagonal's mean");
  v("block_size", s.block_size, "sparsegpt: columns whose mask is chosen together (a multiple of M)");
  v("blocks", s.blocks,
    "as gptq.blocks: the layers pruned together, in order, each block's inputs computed by the pruned blocks "
    "before it");
  v("sensitivity_threshold", s.sensitivity_threshold,
    "relative output error on the calibration inputs above which a layer is pruned less (sparsity 3/4, 1/2, 1/4, "
    "0 of its own; N:M: not at all), the shortfall moved to the layers of its block that stay below it; structured: "
    "the model's relative output error with only that channel group pruned, the shortfall moved to the other groups "
    "(compile_options.sensitivity_samples rows); null = off");
}

template <class V>
void describe(V& v, PruningOverride& s) {
  v("enabled", s.enabled, "false keeps the layer dense");
  v("method", s.method, "override of method");
  v("sparsity", s.sparsity, "override of sparsity");
  v("pattern", s.pattern, "override of pattern");
}

template <class V>
void describe(V& v, TensorQuantOverride& s) {
  v("enabled", s.enabled, "override of enabled");
  v("bits", s.bits, "override of bits");
  v("granularity", s.granularity, "override of granularity");
  v("group_size", s.group_size, "override of group_size");
  v("symmetric", s.symmetric, "override of symmetric");
  v("signed", s.is_signed, "override of signed");
  v("observer", s.observer, "override of observer");
  v("percentile", s.percentile, "override of percentile");
}

template <class V>
void describe(V& v, WeightQuantOverride& s) {
  describe(v, static_cast<TensorQuantOverride&>(s));
  v("algorithm", s.algorithm, "override of algorithm");
}

template <class V>
void describe(V& v, LayerQuantizationSettings& s) {
  v("skip", s.skip, "keep the layer in floating point");
  v("weights", s.weights, "overrides of quantization_settings.weights");
  v("activations", s.activations, "overrides of quantization_settings.activations");
  v("pruning", s.pruning, "overrides of pruning_settings");
}

template <class V>
void describe(V& v, FineTuneSettings& s) {
  v("enabled", s.enabled, "run quantization-aware LoRA fine-tuning after calibration");
  v("method", s.method,
    "qa_lora: train through the quantizer | lora: train on float weights, round the merged weights to the grid");
  v("steps", s.steps, "optimizer steps");
  v("batch_size", s.batch_size, "rows per step over all ranks (the global batch)");
  v("accumulation_steps", s.accumulation_steps, "micro-batches per optimizer step");
  v("learning_rate", s.learning_rate, "peak learning rate (AdamW)");
  v("warmup_steps", s.warmup_steps, "linear warm-up steps, then cosine decay to 0");
  v("weight_decay", s.weight_decay, "AdamW decoupled weight decay of the adapters");
  v("max_grad_norm", s.max_grad_norm, "clip the global gradient norm; 0 = off");
  v("lora_rank", s.lora_rank, "LoRA rank");
  v("lora_alpha", s.lora_alpha, "LoRA alpha (scale = alpha / rank)");
  v("lora_dropout", s.lora_dropout,
    "probability of dropping each of the rank components of B·A in a step (dropout in weight space)");
  v("learn_ranges", s.learn_ranges,
    "LSQ: weight and activation quantization scales train with the adapters (method qa_lora)");
  v("teacher_cache_mb", s.teacher_cache_mb,
    "MiB per rank (on its device) for the float teacher's outputs of micro-batches seen again in a later epoch, "
    "computed once instead of every epoch (exact: the teacher is frozen; not with the C++ API's data_transform "
    "or forward callbacks, which may draw at random); 0 = none");
  v("cuda_graphs", s.cuda_graphs,
    "on a GPU, replay each micro-batch's teacher forward and student forward + backward from CUDA graphs, "
    "captured per input shape after 2 eager runs (the same numbers, far fewer kernel launches); a forward that "
    "cannot be captured runs eagerly, with a warning; not with the C++ API's forward callback");
  v("teacher_autocast", s.teacher_autocast,
    "off | bf16 | fp16: the float teacher's forward under autocast on a GPU, its outputs cast back to float32; "
    "faster where that forward is bound by float32 matrix products, but the student then learns outputs rounded "
    "to 16 bits (not exact; cuda_graphs and teacher_cache_mb apply as before)");
  v("targets", s.targets, "layer names, globs or types to adapt; empty = every quantized layer with weights");
  v("distillation", s.distillation, "mse | kl: loss against the float model's outputs");
  v("task_loss_weight", s.task_loss_weight, "share of cross-entropy on the file's labels (0..1)");
  v("log_every", s.log_every, "steps between progress lines");
  v("eval_every", s.eval_every,
    "steps between evaluations of the model being fine-tuned on evaluation_inputs (logged, in report.json); 0 = none");
  v("resume", s.resume, "continue from <out_dir>/checkpoints/fine_tune.pt when it exists");
  v("stop_after_steps", s.stop_after_steps,
    "checkpoint and stop after this many steps of this run (time-limited jobs); 0 = run to the end");
}

template <class V>
void describe(V& v, CompileOptions& s) {
  v("ptq", s.ptq, "post-training calibration");
  v("sensitivity", s.sensitivity, "per-layer sensitivity analysis");
  v("fine_tune", s.fine_tune, "quantization-aware LoRA fine-tuning");
  v("checkpoint_every", s.checkpoint_every, "fine-tuning steps between checkpoints; 0 = only when stopping");
  v("sensitivity_samples", s.sensitivity_samples, "calibration rows each layer's sensitivity is measured on");
}

template <class V>
void describe(V& v, Resources& s) {
  v("nodes", s.nodes, "SLURM nodes");
  v("tasks_per_node", s.tasks_per_node, "ranks per node; 0 = one per GPU (1 without GPUs)");
  v("gpus_per_node", s.gpus_per_node, "GPUs per node (one rank per GPU)");
  v("cpus_per_task", s.cpus_per_task, "CPU cores per rank");
  v("memory", s.memory, "memory per node, e.g. 16G");
  v("time", s.time, "time limit, e.g. 01:00:00");
  v("partition", s.partition, "SLURM partition");
  v("account", s.account, "SLURM account");
}

template <class V>
void describe(V& v, ExperimentConfig& c) {
  v("model", c.model, "the model to compile");
  v("graph_name", c.graph_name, "name carried into artifacts; default: the model file's stem");
  v("out_dir", c.out_dir, "where rank 0 writes artifacts");
  v("logs_dir", c.logs_dir, "per-rank logs; default <out_dir>/logs");
  v("seed", c.seed, "seed of every random choice");
  v("device", c.device, "cpu | cuda | auto (cuda when a GPU is visible)");
  v("gpu_index", c.gpu_index, "the GPU every rank uses; -1 = the rank's local rank on its host");
  v("autocast", c.autocast, "off | bf16 | fp16: mixed precision for calibration and fine-tuning on GPUs");
  v("matmul_precision", c.matmul_precision,
    "highest | high: float32 matrix products on GPUs in IEEE float32, or in TF32 (Ampere and newer)");
  v("tracing_inputs", c.tracing_inputs,
    "samples that define the graph and its dynamic axes; null = calibration inputs");
  v("calibration_inputs", c.calibration_inputs, "the calibration set");
  v("evaluation_inputs", c.evaluation_inputs,
    "held-out set (same keys as calibration_inputs): FP vs compiled accuracy and agreement; null = none");
  v("data_transform", c.data_transform, "steps applied to every sample (clika_compile's data_transform_fn)");
  v("forward", c.forward, "how a sample is fed to the method (clika_compile's forward_fn)");
  v("deployment_settings", c.deployment_settings, "target runtime preset; required with quantization_settings");
  v("quantization_settings", c.quantization_settings, "global quantization settings; null = no quantization");
  v("layer_quantization_settings", c.layer_quantization_settings,
    "per-layer overrides keyed by layer name or glob (layer4.*)");
  v("pruning_settings", c.pruning_settings,
    "weights set to zero before quantization (magnitude, Wanda, SparseGPT; unstructured or N:M); null = none");
  v("compile_options", c.compile_options, "algorithms and their hyper-parameters (the clika_compile_options argument)");
  v("discard_input_model", c.discard_input_model, "false keeps the caller's module untouched (C++ API)");
  v("is_model_pretrained", c.is_model_pretrained,
    "the model carries trained weights; false: activation ranges are plain min/max and sensitivity is not measured "
    "(both need trained weights), with a note in the report");
  v("is_dry_run", c.is_dry_run, "validate and plan; write only the plan and logs");
  v("skip_eval_set_mode", c.skip_eval_set_mode, "do not switch the module to eval()");
  v("fullgraph", c.fullgraph, "fail on layers qforge cannot handle instead of leaving them in floating point");
  v("dynamic", c.dynamic,
    "symbolic ONNX axes (batch, and sizes that differ between shape groups); false fixes them all");
  v("disable", c.disable, "return the model unchanged");
  v("resources", c.resources, "what qforge submit asks SLURM for");
  v("sweep", c.sweep,
    "settings to compare, each a list of --set overrides (KEY=VALUE); qforge submit runs them as an array job, "
    "task i writing to <out_dir>/sweep-<i>");
}

}  // namespace qforge::schema
