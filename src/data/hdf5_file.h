// Thin RAII layer over HDF5's C API (the C++ API is not on every platform we
// build on). HDF5 builds are not always thread-safe, so every call here holds
// one process-wide lock: the prefetch thread and the main thread may both read.
#pragma once
#include <hdf5.h>

#include <mutex>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace at {
class Tensor;
}

namespace qforge::h5 {

std::mutex& library_lock();

// The innermost message on HDF5's error stack ("truncated file", ...).
std::string last_error_text();

class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

// Opens read-only; DataError names the file and says why (missing, not HDF5, truncated).
Handle open_file(const std::string& path);

bool has_attribute(hid_t object, const std::string& name);
std::string read_string_attribute(hid_t object, const std::string& name, const std::string& where);
int64_t read_int_attribute(hid_t object, const std::string& name, const std::string& where);

bool has_link(hid_t location, const std::string& path);
// Names of the groups directly below `path`, in name order.
std::vector<std::string> list_groups(hid_t file, const std::string& path, const std::string& where);

// Shape and delivered type of a dataset; `rows` receives axis 0.
ArraySpec describe_dataset(hid_t file, const std::string& path, const std::string& where, int64_t* rows);

// HDF5's in-memory type of a delivered dtype.
hid_t memory_type(DType dtype);

// Rows [row_begin, row_end) of a dataset described by `spec`, as a tensor of
// shape [rows, ...row_shape].
// pinned: into page-locked host memory, which a GPU copies from asynchronously
// (only where LibTorch has CUDA).
at::Tensor read_rows(hid_t file, const std::string& path, const ArraySpec& spec, int64_t row_begin, int64_t row_end,
                     const std::string& where, bool pinned = false);

}  // namespace qforge::h5
