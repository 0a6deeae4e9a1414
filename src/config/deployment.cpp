// The deployment presets and their rules, one place per target.
#include "qforge/deployment.h"

#include "qforge/errors.h"

namespace qforge {
namespace {

WeightQuantSettings int8_symmetric_per_channel_weights() {
  WeightQuantSettings w;
  w.bits = 8;
  w.granularity = Granularity::Channel;
  w.symmetric = true;
  w.is_signed = true;
  w.observer = Observer::MinMax;
  return w;
}

ActivationQuantSettings activations(bool symmetric, bool is_signed, Observer observer) {
  ActivationQuantSettings a;
  a.bits = 8;
  a.granularity = Granularity::Tensor;
  a.symmetric = symmetric;
  a.is_signed = is_signed;
  a.observer = observer;
  return a;
}

struct Rule {
  Target target;
  const std::string& where;
  void require(bool ok, const std::string& key, const std::string& runs) const {
    if (!ok)
      throw ConfigError(where + "." + key + ": deployment_settings.target " + to_string(target) + " runs " + runs +
                        "; change the setting, or use target libtorch for other schemes");
  }
};

}  // namespace

bool DeploymentSettings::writes_onnx() const {
  return onnx ? *onnx : target != Target::LibTorch && target != Target::None;
}

QuantizationSettings preset_quantization_settings(Target target) {
  QuantizationSettings s;
  s.weights = int8_symmetric_per_channel_weights();
  switch (target) {
    case Target::TensorRT:
      // Percentile rather than TensorRT's entropy calibrator: on the test
      // networks entropy clipped some layers' inputs hard (output SQNR 8 dB
      // against 31 dB); observer: entropy remains one key away.
      s.activations = activations(true, true, Observer::Percentile);
      break;
    case Target::TensorRTLLM:
      s.weights.bits = 4;
      s.weights.granularity = Granularity::Group;
      s.weights.group_size = 128;
      s.activations = activations(false, false, Observer::MinMax);
      s.activations.enabled = false;
      break;
    case Target::OnnxRuntime:
    case Target::OpenVino:
    case Target::LibTorch:
    case Target::None: s.activations = activations(false, false, Observer::MinMax); break;
  }
  return s;
}

void check_against_target(Target target, const TensorQuantSettings& w, const TensorQuantSettings& a,
                          const std::string& where) {
  const Rule rule{target, where};
  switch (target) {
    case Target::None:
    case Target::LibTorch:  // fake-quant ops run any width and scheme
      return;
    case Target::TensorRT:
      if (w.enabled) {
        // 4-bit weights in blocks are TensorRT-LLM's weight-only scheme, not TensorRT's int8 graph.
        const std::string four_bit = "int8 weights; 4-bit weights in groups deploy with target tensorrt_llm";
        rule.require(w.bits == 8, "weights.bits", w.bits == 4 ? four_bit : "int8 weights");
        rule.require(w.symmetric && w.is_signed, "weights.symmetric", "signed symmetric weights");
        rule.require(w.granularity != Granularity::Group, "weights.granularity",
                     "weights per tensor or per channel; weights in groups deploy with target tensorrt_llm");
      }
      if (a.enabled) {
        rule.require(a.bits == 8, "activations.bits", "int8 activations");
        rule.require(a.symmetric && a.is_signed, "activations.symmetric", "signed symmetric activations");
      }
      return;
    case Target::OnnxRuntime:
    case Target::OpenVino:
      if (w.enabled) {
        rule.require(w.bits == 8, "weights.bits", "8-bit weights");
        rule.require(w.symmetric && w.is_signed, "weights.symmetric", "signed symmetric weights");
        rule.require(w.granularity != Granularity::Group, "weights.granularity", "weights per tensor or per channel");
      }
      if (a.enabled) rule.require(a.bits == 8, "activations.bits", "8-bit activations");
      return;
    case Target::TensorRTLLM:
      rule.require(!a.enabled, "activations.enabled", "weight-only quantization (activations in floating point)");
      if (w.enabled) {
        rule.require(w.bits == 4 || w.bits == 8, "weights.bits", "int4 or int8 weights");
        rule.require(w.symmetric && w.is_signed, "weights.symmetric", "signed symmetric weights");
        rule.require(w.bits == 8 || w.granularity == Granularity::Group, "weights.granularity",
                     "int4 weights per group (group_size 64 or 128)");
        if (w.granularity == Granularity::Group)
          rule.require(w.group_size == 64 || w.group_size == 128, "weights.group_size", "groups of 64 or 128");
      }
      return;
  }
}

}  // namespace qforge
