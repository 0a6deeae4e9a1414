// Deployment presets: what each target runtime can execute. A preset gives
// the default quantization settings for its target and the rules that
// settings, global or per layer, must keep; a contradiction is a ConfigError
// that says what the target runs.
#pragma once
#include <string>

#include "qforge/config.h"

namespace qforge {

// The quantization settings a target runs by default:
//   tensorrt:     int8 symmetric weights per channel, int8 symmetric activations (99.99th percentile)
//   onnxruntime:  int8 symmetric weights per channel, uint8 asymmetric activations (QDQ)
//   openvino:     int8 symmetric weights per channel, uint8 asymmetric activations
//   tensorrt_llm: int4 symmetric weights per group of 128, activations in floating point
//   libtorch:     int8 symmetric weights per channel, uint8 asymmetric activations; any scheme allowed
QuantizationSettings preset_quantization_settings(Target target);

// Throws ConfigError naming `where` (e.g. "quantization_settings" or
// "layer_quantization_settings[fc]") when the settings contradict the target.
void check_against_target(Target target, const TensorQuantSettings& weights, const TensorQuantSettings& activations,
                          const std::string& where);

}  // namespace qforge
