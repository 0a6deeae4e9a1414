#include "compile/block_inputs.h"

#include <algorithm>

#include "metrics/output_error.h"
#include "runtime/device.h"
#include "runtime/logger.h"
#include "runtime/memory_peak.h"
#include "util/text.h"

namespace qforge {
namespace {

int64_t tensor_bytes(const std::vector<c10::IValue>& values) {
  int64_t bytes = 0;
  for (const auto& v : values)
    map_tensors(v, [&](const at::Tensor& t) {
      bytes += static_cast<int64_t>(t.nbytes());
      return t;
    });
  return bytes;
}

}  // namespace

BlockInputs::BlockInputs(ShardSource shard, RunFirst run_first, const c10::Device& device, Autocast autocast,
                         BlockOffload offload)
    : shard_(std::move(shard)),
      run_first_(std::move(run_first)),
      device_(device),
      autocast_(autocast),
      offload_(offload) {}

c10::IValue BlockInputs::run(torch::jit::Module& module, const std::string& method,
                             const std::vector<c10::IValue>& in) const {
  // Copies on the device: an in-place op in a block must not change what is kept.
  std::vector<c10::IValue> stack;
  for (const auto& v : in)
    stack.push_back(map_tensors(v, [&](const at::Tensor& t) {
      return t.device() == device_ ? t.clone() : t.to(device_, /*non_blocking=*/true);
    }));
  AutocastScope autocast(autocast_, device_);
  return module.get_method(method)(std::move(stack));
}

void BlockInputs::sweep(torch::jit::Module& module, const std::string& method) const {
  if (segment_ == 0) {
    for_each_batch(shard_, [&](const Batch& batch) { run_first_(module, method, batch); });
    return;
  }
  for (const auto& in : kept_) run(module, method, in);
}

void BlockInputs::choose_place(const std::vector<c10::IValue>& first, size_t batches) {
  const int64_t bytes = tensor_bytes(first) * static_cast<int64_t>(batches);
  const int64_t free = free_device_bytes(device_);
  // auto: the GPU while the inputs take at most half of what it can still hold.
  on_host_ =
      device_.is_cuda() && (offload_ == BlockOffload::Cpu || (offload_ == BlockOffload::Auto && 2 * bytes > free));
}

void BlockInputs::advance(torch::jit::Module& module, const std::string& method) {
  std::vector<std::vector<c10::IValue>> next;
  const auto keep = [&](const c10::IValue& out, size_t batches) {
    std::vector<c10::IValue> passed = out.toTupleRef().elements().vec();
    if (segment_ == 0 && next.empty()) choose_place(passed, batches);
    if (on_host_)
      for (auto& v : passed)
        v = map_tensors(v, [](const at::Tensor& t) {
          return at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true)).copy_(t);
        });
    next.push_back(std::move(passed));
  };
  if (segment_ == 0) {
    const int64_t size = std::max<int64_t>(shard_.options.batch_size, 1);
    const auto batches = static_cast<size_t>((shard_.rows.end - shard_.rows.begin + size - 1) / size);
    for_each_batch(shard_, [&](const Batch& batch) { keep(run_first_(module, method, batch), batches); });
  } else {
    for (auto& in : kept_) {
      keep(run(module, method, in), kept_.size());
      in.clear();  // the previous segment's inputs go as the next ones come
    }
  }
  kept_ = std::move(next);
  ++segment_;
}

std::string BlockInputs::where() const {
  if (segment_ == 0) return "";
  const std::string place = on_host_ ? "pinned host memory" : device_.is_cuda() ? "GPU memory" : "host memory";
  int64_t bytes = 0;
  for (const auto& in : kept_) bytes += tensor_bytes(in);
  return size_text(bytes) + " in " + place;
}

}  // namespace qforge
