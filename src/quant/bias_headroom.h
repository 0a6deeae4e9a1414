// Integer convolutions and matrix products (ONNX Runtime's QLinearConv,
// OpenVINO's) store a layer's bias as int32 codes of scale input scale x
// weight scale. An input whose calibrated range is almost nothing (a dead
// activation, untrained weights) gives so small a scale that those codes
// wrap, and the runtime's output is garbage while the TorchScript model's is
// fine. Such an input's scale is raised to the smallest with which every
// channel's bias fits int32 with room to spare.
#pragma once
#include <ATen/ATen.h>

#include "qforge/compile.h"

namespace qforge {

// Raises `input`'s per-tensor scale where `bias` (one per output channel)
// would not fit int32 at input scale x weight scale; the zero point follows
// the range's lower end (asymmetric) or stays (symmetric). Returns whether it did.
bool make_room_for_int32_bias(ActivationRange& input, const QuantRange& range, bool symmetric, const at::Tensor& bias,
                              const WeightQuant& weight);

}  // namespace qforge
