#include "runtime/side_stream.h"

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

namespace qforge {

// Through c10's device-generic guard, so this file needs no CUDA headers and
// builds the same with LibTorch for CPU only.
SideStream::SideStream(const c10::Device& device) {
  if (device.is_cuda()) side_ = c10::impl::VirtualGuardImpl(c10::kCUDA).getStreamFromGlobalPool(device);
}

void SideStream::run(at::TensorList inputs, const std::function<void()>& work, bool written_later) {
  if (!side_ || inputs.empty() || inputs[0].device() != side_->device()) return work();
  if (written_later) {
    join();
    return work();
  }
  const c10::Stream computing = c10::impl::VirtualGuardImpl(c10::kCUDA).getStream(side_->device());
  c10::Event produced(c10::kCUDA);
  produced.record(computing);
  produced.block(*side_);
  for (const auto& x : inputs) x.record_stream(*side_);
  const c10::StreamGuard on_side(*side_);
  work();
}

void SideStream::join() {
  if (!side_) return;
  c10::Event done(c10::kCUDA);
  done.record(*side_);
  done.block(c10::impl::VirtualGuardImpl(c10::kCUDA).getStream(side_->device()));
}

}  // namespace qforge
