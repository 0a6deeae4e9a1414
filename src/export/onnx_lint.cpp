#include "export/onnx_lint.h"

#include <ATen/ATen.h>

#include "qforge/errors.h"
#include "util/text.h"

namespace qforge::onnx_export {
namespace {

std::string what(const QuantizerRecord& q) { return "layer '" + q.layer + "' " + (q.weight ? "weights" : "input"); }

bool all_zero(const at::Tensor& t) { return t.numel() == 0 || t.eq(0).all().item<bool>(); }

void check(const QuantizerRecord& q, Target target, std::vector<std::string>& problems) {
  const auto add = [&](const std::string& rule) { problems.push_back(what(q) + ": " + rule); };
  if (!at::isfinite(q.scale).all().item<bool>() || !q.scale.gt(0).all().item<bool>())
    add("every scale must be positive and finite (min " + std::to_string(q.scale.min().item<double>()) + ")");
  const bool int8 = q.qmin >= -128 && q.qmax <= 127 && q.qmax - q.qmin >= 254;
  const bool uint8 = q.qmin == 0 && q.qmax == 255;
  const bool int4 = q.qmin >= -8 && q.qmax <= 7 && q.qmax - q.qmin >= 14;
  const std::string name = to_string(target);
  switch (target) {
    case Target::TensorRT:
      if (!all_zero(q.zero_point)) add("TensorRT needs symmetric quantization: zero point 0");
      if (!q.weight && q.axis >= 0) add("TensorRT quantizes activations per tensor, not per channel");
      if (!q.weight && !int8) add("TensorRT runs int8 activations");
      if (q.weight && !int8 && !(int4 && q.block_size)) add("TensorRT runs int8 weights (or int4 in blocks)");
      if (q.weight && q.axis >= 0 && q.op == "Conv" && q.axis != 0)
        add("TensorRT reads Conv weights per output channel (axis 0)");
      if (q.weight && q.axis >= 0 && q.op == "ConvTranspose" && q.axis != 1)
        add("TensorRT reads ConvTranspose weights per output channel (axis 1)");
      break;
    case Target::OnnxRuntime:
    case Target::OpenVino:
      if (!q.weight && q.axis >= 0) add(name + " quantizes activations per tensor, not per channel");
      if (!q.weight && !int8 && !uint8) add(name + " runs 8-bit activations (int8 or uint8)");
      if (q.weight && q.axis >= 0 && !all_zero(q.zero_point))
        add(name + " needs symmetric per-channel weights (zero point 0)");
      break;
    case Target::TensorRTLLM:
      if (!q.weight) add("TensorRT-LLM's weight-only scheme keeps activations in floating point");
      if (q.weight && !all_zero(q.zero_point)) add("TensorRT-LLM needs symmetric weights (zero point 0)");
      break;
    case Target::LibTorch:
    case Target::None: break;
  }
}

}  // namespace

void lint(const std::vector<QuantizerRecord>& quantizers, Target target) {
  std::vector<std::string> problems;
  for (const auto& q : quantizers) check(q, target, problems);
  if (problems.empty()) return;
  const size_t shown = std::min<size_t>(problems.size(), 10);
  std::string text = "ONNX export for target " + std::string(to_string(target)) + " refused (" +
                     std::to_string(problems.size()) + " problem(s)):";
  for (size_t i = 0; i < shown; ++i) text += "\n  " + problems[i];
  if (shown < problems.size()) text += "\n  ... and " + std::to_string(problems.size() - shown) + " more";
  throw ExportError(text);
}

}  // namespace qforge::onnx_export
