// Reads one rank's shard of the calibration set, batch by batch, with a
// bounded prefetch queue filled by a background thread: at most `prefetch`
// batches are held, so memory does not grow with the file.
#pragma once
#include <ATen/Tensor.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "data/dataset.h"
#include "data/shard.h"

namespace qforge {

// The YAML transform list (cast, scale, normalize) as a DataTransformFn.
// Names in a step's `inputs` must be input names of the data (DataError if not).
DataTransformFn make_transform(const std::vector<TransformStep>& steps, const DatasetInfo& info);

struct SampleReaderOptions {
  int64_t batch_size = 8;
  int64_t prefetch = 2;
  bool check_finite = true;
  DataTransformFn transform;  // may be empty
  // >= 0: the reader thread reads into pinned host memory and starts an
  // asynchronous copy to this GPU, so batches arrive on the device without
  // the GPU waiting for I/O; the transform then runs on the device.
  int cuda_device = -1;
};

class SampleReader {
 public:
  SampleReader(DatasetInfo info, RowRange rows, SampleReaderOptions options);
  // Reads the given batches in order (e.g. the micro-batches of every
  // fine-tuning step), prefetching across their boundaries.
  SampleReader(DatasetInfo info, std::vector<BatchSlice> slices, SampleReaderOptions options);
  ~SampleReader();
  SampleReader(const SampleReader&) = delete;
  SampleReader& operator=(const SampleReader&) = delete;

  // The next batch, or nullopt at the end of the shard. Rethrows a read error
  // (DataError naming file, dataset and row) from the prefetch thread.
  std::optional<Batch> next();

  const DatasetInfo& info() const { return info_; }
  size_t batch_count() const { return slices_.size(); }
  // Most batches held at once so far (queue + the one being read): <= prefetch + 1.
  size_t peak_buffered() const;

 private:
  void produce();
  Batch read_slice(const BatchSlice& slice, int64_t file);  // file: an open HDF5 id

  DatasetInfo info_;
  SampleReaderOptions options_;
  std::vector<BatchSlice> slices_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Batch> queue_;
  size_t next_slice_ = 0;
  size_t peak_ = 0;
  bool done_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

// Reads the whole of `rows` of `info` in batches of `batch_size` (split at
// group ends), each passed through `transform`; for small sets (tracing and
// sensitivity samples, a fine-tuning step's rows, tests).
std::vector<Batch> read_all(const DatasetInfo& info, RowRange rows, int64_t batch_size,
                            const DataTransformFn& transform = {});

}  // namespace qforge
