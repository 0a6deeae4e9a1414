// Work beside the stream that computes. On a GPU, calibration's observers
// read each activation on a stream of their own: their memory-bound
// reductions then run beside the model's next layers (mostly compute-bound
// convolutions and matmuls) instead of queuing between them. On a CPU, or for
// a tensor on another device, the work runs inline.
#pragma once
#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/Stream.h>

#include <functional>
#include <optional>

namespace qforge {

class SideStream {
 public:
  explicit SideStream(const c10::Device& device);

  // Runs `work` on the side stream, after everything queued so far on the
  // computing stream (which produced `inputs`); their memory is not reused
  // before the side stream is done with it. Tensors `work` creates belong to
  // the side stream: read them only after join(). With `written_later` (the
  // computing stream will write `inputs` in place, which work beside could
  // read after that write), `work` runs on the computing stream instead,
  // after all the work run beside so far.
  void run(at::TensorList inputs, const std::function<void()>& work, bool written_later = false);
  // The computing stream waits (on the device, not the host) for all the
  // work run so far.
  void join();

 private:
  std::optional<c10::Stream> side_;
};

}  // namespace qforge
