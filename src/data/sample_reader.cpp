#include "data/sample_reader.h"

#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "data/hdf5_file.h"
#include "qforge/errors.h"

namespace qforge {

SampleReader::SampleReader(DatasetInfo info, RowRange rows, SampleReaderOptions options)
    : SampleReader(info, plan_batches(rows, info.group_rows(), options.batch_size), options) {}

struct SampleReader::ReadBatch {
  Batch batch;
  std::optional<c10::Event> copied;  // recorded on the copy stream after the batch's copies
};

SampleReader::SampleReader(DatasetInfo info, std::vector<BatchSlice> slices, SampleReaderOptions options)
    : info_(std::move(info)), options_(std::move(options)), slices_(std::move(slices)) {
  if (options_.prefetch < 1) throw Error("SampleReader: prefetch must be at least 1");
  const int readers = std::clamp<int>(options_.readers, 1, static_cast<int>(options_.prefetch) + 1);
  for (int i = 0; i < readers; ++i) workers_.emplace_back([this] { produce(); });
}

SampleReader::~SampleReader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_)
    if (worker.joinable()) worker.join();
}

size_t SampleReader::peak_buffered() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_;
}

// The next slice to read once the window has room; nullopt when there is
// nothing left to read, the reader stops, or a slice failed.
std::optional<size_t> SampleReader::claim_slice() {
  std::unique_lock<std::mutex> lock(mutex_);
  const size_t window = static_cast<size_t>(options_.prefetch) + 1;  // waiting + being read
  changed_.wait(lock,
                [&] { return stop_ || error_ || next_slice_ >= slices_.size() || next_slice_ < next_out_ + window; });
  if (stop_ || error_ || next_slice_ >= slices_.size()) return std::nullopt;
  const size_t slice = next_slice_++;
  peak_ = std::max(peak_, next_slice_ - next_out_);
  return slice;
}

void SampleReader::produce() {
  // Files stay open for the whole shard; one handle per file and thread.
  std::map<std::string, h5::Handle> files;
  while (const auto slice = claim_slice()) {
    try {
      const auto& group = info_.groups[slices_[*slice].group];
      if (!files.count(group.file)) files.emplace(group.file, h5::open_file(group.file));
      auto read = std::make_shared<ReadBatch>(read_slice(slices_[*slice], files.at(group.file).get()));
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(*slice, std::move(read));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      // The earliest failed slice is the one next() reports, in the order a single thread reads.
      if (!error_ || *slice < error_slice_) {
        error_ = std::current_exception();
        error_slice_ = *slice;
      }
    }
    changed_.notify_all();
  }
}

SampleReader::ReadBatch SampleReader::read_slice(const BatchSlice& slice, int64_t file) {
  const auto& group = info_.groups[slice.group];
  const bool to_gpu = options_.cuda_device >= 0;
  const c10::Device gpu(c10::kCUDA, static_cast<c10::DeviceIndex>(std::max(options_.cuda_device, 0)));
  // A stream for this thread's copies, so they overlap the model's compute.
  std::optional<c10::StreamGuard> on_copy_stream;
  if (to_gpu) on_copy_stream.emplace(c10::impl::VirtualGuardImpl(c10::kCUDA).getStreamFromGlobalPool(gpu));
  ReadBatch read;
  Batch& batch = read.batch;
  batch.group = slice.group;
  batch.global_begin = slice.global_begin;
  auto read_array = [&](const ArraySpec& spec) {
    const std::string path = "/samples/" + group.name + "/" + spec.name;
    at::Tensor t = h5::read_rows(file, path, spec, slice.row_begin, slice.row_end, group.file + ":" + path, to_gpu);
    // A NaN or Inf makes the sum NaN or Inf: one pass that runs at memory
    // speed (isfinite + any: three passes, about 150 MB/s on one thread, which
    // bounded a GPU's calibration and fine-tuning). Only a sum that is not
    // finite (a bad value, or finite values that overflow) looks for the row.
    if (options_.check_finite && t.is_floating_point() && !std::isfinite(t.sum().item<double>())) {
      const at::Tensor bad = t.reshape({t.size(0), -1}).isfinite().logical_not().any(1);
      if (bad.any().item<bool>()) {
        const int64_t row = bad.nonzero()[0][0].item<int64_t>();
        throw DataError(group.file + ":" + path + ": row " + std::to_string(slice.row_begin + row) + " (sample " +
                        std::to_string(slice.global_begin + row) +
                        ") holds NaN or Inf; clean the data or set calibration_inputs.check_finite: false");
      }
    }
    // The pinned buffer stays allocated until the copy is done (LibTorch's host allocator records it).
    if (to_gpu) t = t.to(gpu, /*non_blocking=*/true);
    return t;
  };
  for (const auto& spec : group.inputs) batch.inputs.push_back(read_array(spec));
  if (group.has_labels) batch.labels = read_array(group.labels);
  if (to_gpu) {
    read.copied.emplace(c10::kCUDA);
    read.copied->record(on_copy_stream->current_stream());
  }
  return read;
}

std::optional<Batch> SampleReader::next() {
  std::shared_ptr<ReadBatch> read;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (next_out_ >= slices_.size()) return std::nullopt;
    changed_.wait(lock, [&] { return ready_.count(next_out_) || (error_ && error_slice_ == next_out_); });
    const auto found = ready_.find(next_out_);
    if (found == ready_.end()) std::rethrow_exception(error_);
    read = std::move(found->second);
    ready_.erase(found);
    ++next_out_;
  }
  changed_.notify_all();
  Batch batch = std::move(read->batch);
  if (read->copied) {
    // The computing stream waits for the copy on the device; the allocator
    // keeps the copies' memory until that stream is done with them.
    const c10::Stream computing = c10::impl::VirtualGuardImpl(c10::kCUDA).getStream(read->copied->device());
    read->copied->block(computing);
    for (auto& t : batch.inputs) t.record_stream(computing);
    if (batch.labels.defined()) batch.labels.record_stream(computing);
  }
  if (options_.transform) options_.transform(batch, info_);
  return batch;
}

std::vector<Batch> read_all(const DatasetInfo& info, RowRange rows, int64_t batch_size,
                            const DataTransformFn& transform) {
  SampleReaderOptions options;
  options.batch_size = batch_size;
  options.prefetch = 1;
  options.transform = transform;
  SampleReader reader(info, rows, options);
  std::vector<Batch> out;
  while (auto batch = reader.next()) out.push_back(std::move(*batch));
  return out;
}

}  // namespace qforge
