// Reading rows into tensors: the one part of the HDF5 layer that needs LibTorch
// (the layout reader, hdf5_file.cpp, builds without it).
#include <ATen/ATen.h>

#include "data/hdf5_file.h"
#include "qforge/errors.h"

namespace qforge::h5 {
namespace {

at::ScalarType scalar_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return at::kFloat;
    case DType::Float64: return at::kDouble;
    case DType::Int8: return at::kChar;
    case DType::UInt8: return at::kByte;
    case DType::Int16: return at::kShort;
    case DType::Int32: return at::kInt;
    case DType::Int64: return at::kLong;
    default: throw Error("hdf5: no tensor type for this dtype");
  }
}

}  // namespace

at::Tensor read_rows(hid_t file, const std::string& path, const ArraySpec& spec, int64_t row_begin, int64_t row_end,
                     const std::string& where, bool pinned) {
  std::vector<int64_t> shape{row_end - row_begin};
  shape.insert(shape.end(), spec.row_shape.begin(), spec.row_shape.end());
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(scalar_type(spec.dtype)).pinned_memory(pinned));
  std::lock_guard<std::mutex> lock(library_lock());
  const hid_t dataset = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
  if (dataset < 0) throw DataError(where + ": cannot open dataset (" + last_error_text() + ")");
  const hid_t space = H5Dget_space(dataset);
  std::vector<hsize_t> start(shape.size(), 0), count(shape.begin(), shape.end());
  start[0] = static_cast<hsize_t>(row_begin);
  H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  const hid_t memspace = H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr);
  const herr_t rc =
      out.numel() == 0 ? 0 : H5Dread(dataset, memory_type(spec.dtype), memspace, space, H5P_DEFAULT, out.data_ptr());
  H5Sclose(memspace);
  H5Sclose(space);
  H5Dclose(dataset);
  if (rc < 0)
    throw DataError(where + ": cannot read rows " + std::to_string(row_begin) + ".." + std::to_string(row_end - 1) +
                    " (" + last_error_text() + "); the file may be truncated or corrupt");
  return out;
}

}  // namespace qforge::h5
