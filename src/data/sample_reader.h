// Reads one rank's shard of the calibration set, batch by batch, with a
// bounded prefetch window filled by background threads: at most `prefetch`
// batches wait beside the one being read, so memory does not grow with the
// file, and batches arrive in order whatever thread read them.
#pragma once
#include <ATen/Tensor.h>

#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
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
  // On a GPU, the copies run on a stream of their own and the stream that
  // computes waits for them on the device, not the host.
  int cuda_device = -1;
  // Threads reading batches at once (at most prefetch + 1 are useful): one
  // reads HDF5 while others check and copy what they read. qforge reads
  // with one: HDF5 lets one thread read at a time, and on H100 hosts a
  // ResNet-50 calibration pass ran 1-4.5% faster with one reader than with
  // three (BENCHMARKS.md, "Calibration part by part").
  int readers = 1;
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
  // Most batches held at once so far (read and waiting, or being read): <= prefetch + 1.
  size_t peak_buffered() const;

 private:
  struct ReadBatch;  // a batch and the event its device copy completes
  void produce();
  std::optional<size_t> claim_slice();
  ReadBatch read_slice(const BatchSlice& slice, int64_t file);  // file: an open HDF5 id

  DatasetInfo info_;
  SampleReaderOptions options_;
  std::vector<BatchSlice> slices_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<size_t, std::shared_ptr<ReadBatch>> ready_;  // by slice index
  size_t next_slice_ = 0;                               // the next slice a thread claims
  size_t next_out_ = 0;                                 // the next slice next() returns
  size_t peak_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;  // the first failed slice's error
  size_t error_slice_ = 0;
  std::vector<std::thread> workers_;
};

// Reads the whole of `rows` of `info` in batches of `batch_size` (split at
// group ends), each passed through `transform`; for small sets (tracing and
// sensitivity samples, a fine-tuning step's rows, tests).
std::vector<Batch> read_all(const DatasetInfo& info, RowRange rows, int64_t batch_size,
                            const DataTransformFn& transform = {});

}  // namespace qforge
