// Inserting fake quantization into a TorchScript method as standard ATen ops
// (aten::fake_quantize_per_channel_affine / _per_tensor_affine), reading
// scales and zero points from attributes of the root module, so the result
// runs in plain LibTorch or PyTorch with no qforge library loaded.
//
// The method is inlined first: every layer's weight then appears as a chain
// of prim::GetAttr from self ("layer1" -> "0" -> "conv1" -> "weight"), which
// names the layer instance. Parameters live on the root module under one name
// per layer, so several instances of one submodule class (a shared class
// type) each get their own values.
#pragma once
#include <torch/script.h>

#include <optional>
#include <string>
#include <vector>

#include "graph/fuse_observations.h"
#include "quant/observer.h"
#include "quant/quantization.h"

namespace qforge {

// A LoRA adapter of one layer: the layer computes with W + scale·(B·diag(mask)·A)
// viewed as W's shape (A: [rank, elements per output row], B: [outputs, rank]).
// The mask is dropout over the rank components, redrawn every training step;
// undefined, it is all ones.
struct LoraAdapter {
  at::Tensor a;
  at::Tensor b;
  double scale = 1.0;
  at::Tensor mask;  // [rank]
  at::Tensor keep;  // the weight's shape: a pruned layer's mask, the adapted weight multiplied by it; else undefined
};

// (W + scale·(B·A))·keep, with the ops the rewritten graph uses where it adapts the
// weight (plain LoRA beside a linear layer adds its own product instead).
at::Tensor adapted_weight(const at::Tensor& weight, const LoraAdapter& adapter);

struct LayerFakeQuant {
  std::string layer;                  // "layer1.0.conv1"
  std::optional<LoraAdapter> lora;    // adapter added to the weight before its quantization
  std::optional<WeightQuant> weight;  // per tensor / channel / group
  QuantRange weight_range;
  at::Tensor weight_value;       // when defined, the layer's weight in the clone (a solved weight: GPTQ)
  std::optional<QParams> input;  // per-tensor activation quantization of the layer's input
  QuantRange input_range;
  std::optional<QParams> output;  // per-tensor quantization of the layer's output (residual adds)
  QuantRange output_range;
  // Learned ranges (LSQ with the scale in the log domain): when defined, the
  // scale used is scale·exp(log_multiplier), through learnable fake-quant
  // ops, so the multiplier gets a gradient. One element per scale.
  at::Tensor weight_log_multiplier;
  at::Tensor input_log_multiplier;
};

// The scale a learned log-multiplier gives: scale·exp(multiplier), in the shape of `scale`.
at::Tensor learned_scale(const at::Tensor& scale, const at::Tensor& log_multiplier);

// The ops a rewritten graph fake-quantizes with. A model that is saved takes
// ATen's, which every PyTorch loads. Fine-tuning takes qforge's for
// per-channel weights (graph/fake_quantize_rows.h) and for learned ranges
// (graph/fake_quantize_learnable.h): the same numbers and gradients without
// a host synchronization per weight or activation.
enum class FakeQuantOps { Aten, Training };

// A clone of `module` whose `method` computes with fake quantization; the
// input module is left as it was. Adapters become parameters of the clone's
// root holding the very tensors given (training updates them in place). (The rewrite works on the clone's fresh
// method graph: a graph that has already run keeps its compiled plan, so it
// cannot be edited in place.) Throws ModelError naming the layer when a
// layer's weight is not read by the method.
torch::jit::Module with_fake_quantization(const torch::jit::Module& module, const std::string& method,
                                          const std::vector<LayerFakeQuant>& layers,
                                          FakeQuantOps ops = FakeQuantOps::Aten);

// TensorRT fuses a residual add into the convolution before it when the add's
// other input is quantized, and onnxruntime runs the add in int8 when both
// operands are (with layers_feeding_adds' output quantizers on the convolution
// side). For each add of a convolution's output and a tensor
// that a layer's input quantizer already quantizes, the add reads that tensor
// through the same quantizer (so the TorchScript model and its ONNX export, which
// then shares one Q/DQ pair between both consumers, compute alike). Edits the
// method's graph in place, before it first runs; returns the adds changed.
int quantize_residual_inputs(torch::jit::Module& module, const std::string& method);

// A clone of `module` whose `method` calls qforge::observe(x, i) on the
// input x of every linear/conv op that reads layer i's weight: the
// calibration graph. The op hands x to the ObserveScope active on this
// process (graph/observe_op.h); the clone is never saved. ModelError names a
// layer whose weight the method does not read.
torch::jit::Module with_observers(const torch::jit::Module& module, const std::string& method,
                                  const std::vector<std::string>& layers);

// A tensor calibration observes: a layer's input, or its output.
struct ObservedTensor {
  std::string layer;
  bool output = false;
};
// As above, with observers on layer outputs too (qforge::observe(y, i) after the op).
// With `served_by`, a point that observes exactly the tensors an earlier point
// observes (q, k and v reading one input) gets no op of its own:
// (*served_by)[i] is the point whose ops observe point i's tensors (i itself
// when they are its own; -1 when the method never computes with the layer).
// With ObserveFusion::IntoClamps, a ReLU, ReLU6 or hardtanh computing an observed tensor observes
// it itself (graph/fuse_observations.h): calibration's graph.
torch::jit::Module with_observers(const torch::jit::Module& module, const std::string& method,
                                  const std::vector<ObservedTensor>& points, std::vector<int64_t>* served_by = nullptr,
                                  ObserveFusion fusion = ObserveFusion::None);

// The layers whose output (a convolution's or linear's result) is an operand of
// an add: the residual connections that onnxruntime runs as one quantized add
// when both operands and the sum are quantized.
std::vector<std::string> layers_feeding_adds(const torch::jit::Module& module, const std::string& method);

// The layers (module paths) whose weight `method` reads.
std::vector<std::string> layers_read_by(const torch::jit::Module& module, const std::string& method);

// The module path of a value that is a chain of prim::GetAttr from the
// method's self ("" for self itself), or nullopt when it is not one.
std::optional<std::string> attribute_path(const torch::jit::Value* value, const torch::jit::Value* self);

}  // namespace qforge
