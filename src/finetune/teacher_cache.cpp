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
  if (std::optional<c10::IValue> kept = take(batch)) return *kept;
  c10::IValue outputs = compute();
  keep(batch, outputs);
  return outputs;
}

std::optional<c10::IValue> TeacherCache::take(const Batch& batch) {
  const Key key{batch.global_begin, batch.rows()};
  if (const auto uses = uses_left_.find(key); uses != uses_left_.end() && uses->second > 0) --uses->second;
  const auto found = kept_.find(key);
  if (found == kept_.end()) return std::nullopt;
  ++reused_;
  c10::IValue outputs = found->second;
  if (!recurs(batch)) {  // its last use: the memory goes back
    kept_bytes_ -= bytes_of(outputs);
    kept_.erase(found);
  }
  return outputs;
}

bool TeacherCache::recurs(const Batch& batch) const {
  const auto uses = uses_left_.find({batch.global_begin, batch.rows()});
  return uses != uses_left_.end() && uses->second > 0;
}

void TeacherCache::keep(const Batch& batch, const c10::IValue& outputs) {
  if (!recurs(batch)) return;
  const int64_t bytes = bytes_of(outputs);
  if (kept_bytes_ + bytes > budget_bytes_) return;
  kept_.emplace(Key{batch.global_begin, batch.rows()}, outputs);
  kept_bytes_ += bytes;
}

}  // namespace qforge
