#include "finetune/teacher_cache.h"

#include "metrics/output_error.h"

namespace qforge {
namespace {

int64_t bytes_of(const c10::IValue& outputs) {
  int64_t bytes = 0;
  for (const at::Tensor& t : output_tensors(outputs)) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

}  // namespace

TeacherCache::TeacherCache(const std::vector<BatchSlice>& planned, int64_t budget_bytes) : budget_bytes_(budget_bytes) {
  for (const BatchSlice& s : planned) ++uses_left_[{s.global_begin, s.row_end - s.row_begin}];
}

c10::IValue TeacherCache::outputs(const Batch& batch, const std::function<c10::IValue()>& compute) {
  const Key key{batch.global_begin, batch.rows()};
  const auto uses = uses_left_.find(key);
  const bool recurs = uses != uses_left_.end() && --uses->second > 0;
  if (const auto found = kept_.find(key); found != kept_.end()) {
    ++reused_;
    c10::IValue outputs = found->second;
    if (!recurs) {  // its last use: the memory goes back
      kept_bytes_ -= bytes_of(outputs);
      kept_.erase(found);
    }
    return outputs;
  }
  c10::IValue outputs = compute();
  if (recurs) {
    const int64_t bytes = bytes_of(outputs);
    if (kept_bytes_ + bytes <= budget_bytes_) {
      kept_.emplace(key, outputs);
      kept_bytes_ += bytes;
    }
  }
  return outputs;
}

}  // namespace qforge
