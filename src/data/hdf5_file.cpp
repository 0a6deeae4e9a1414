#include "data/hdf5_file.h"

#include <filesystem>

#include "qforge/errors.h"

namespace qforge::h5 {
namespace {

// HDF5 prints its error stack to stderr by default; we report errors ourselves.
struct SilenceAutoPrint {
  SilenceAutoPrint() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};

void silence() { static SilenceAutoPrint once; }

herr_t walk_innermost(unsigned n, const H5E_error2_t* err, void* data) {
  auto* text = static_cast<std::string*>(data);
  if (n == 0 && err->desc) *text = err->desc;
  return 0;
}

// Memory type HDF5 converts the file's type into, and the dtype we deliver.
DType delivered_dtype(hid_t type, const std::string& where) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (size <= 4) return DType::Float32;  // float16 files widen to float32
    if (size == 8) return DType::Float64;
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 1) return is_signed ? DType::Int8 : DType::UInt8;
    if (size == 2) return is_signed ? DType::Int16 : DType::Int32;
    if (size == 4) return is_signed ? DType::Int32 : DType::Int64;
    if (size == 8 && is_signed) return DType::Int64;
  }
  const char* names[] = {"integer",  "float",     "time", "string",          "bitfield", "opaque",
                         "compound", "reference", "enum", "variable-length", "array"};
  const std::string cls_name = cls >= 0 && cls < 11 ? names[cls] : "unknown";
  throw DataError(where + ": unsupported dtype (" + cls_name + ", " + std::to_string(size) +
                  " bytes); expected float16/32/64, int8/16/32/64 or uint8/16/32 (store masks and "
                  "booleans as uint8)");
}

}  // namespace

std::mutex& library_lock() {
  static std::mutex lock;
  return lock;
}

std::string last_error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_innermost, &text);
  return text.empty() ? "unknown HDF5 error" : text;
}

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    this->~Handle();
    id_ = o.id_;
    closer_ = o.closer_;
    o.id_ = -1;
  }
  return *this;
}

Handle::~Handle() {
  if (id_ >= 0 && closer_) {
    std::lock_guard<std::mutex> lock(library_lock());
    closer_(id_);
  }
  id_ = -1;
}

Handle open_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw DataError(path + ": no such file");
  if (std::filesystem::is_directory(path, ec)) throw DataError(path + ": is a directory, expected an HDF5 file");
  std::lock_guard<std::mutex> lock(library_lock());
  silence();
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw DataError(path +
                    ": not an HDF5 file (no HDF5 signature; the file is empty, of another format, or unreadable)");
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0)
    throw DataError(path + ": cannot open as HDF5 (" + last_error_text() +
                    "); the file may be truncated or still being written");
  return Handle(id, H5Fclose);
}

bool has_attribute(hid_t object, const std::string& name) {
  std::lock_guard<std::mutex> lock(library_lock());
  return H5Aexists(object, name.c_str()) > 0;
}

std::string read_string_attribute(hid_t object, const std::string& name, const std::string& where) {
  std::lock_guard<std::mutex> lock(library_lock());
  if (H5Aexists(object, name.c_str()) <= 0) throw DataError(where + ": missing attribute '" + name + "'");
  const hid_t attr = H5Aopen(object, name.c_str(), H5P_DEFAULT);
  const hid_t type = H5Aget_type(attr);
  std::string value;
  bool ok = H5Tget_class(type) == H5T_STRING;
  if (ok && H5Tis_variable_str(type) > 0) {
    char* text = nullptr;
    const hid_t mem = H5Tcopy(H5T_C_S1);
    H5Tset_size(mem, H5T_VARIABLE);
    H5Tset_cset(mem, H5Tget_cset(type));  // h5py writes UTF-8; HDF5 will not convert between sets
    ok = H5Aread(attr, mem, &text) >= 0;
    if (ok && text) value = text;
    if (text) H5free_memory(text);
    H5Tclose(mem);
  } else if (ok) {
    std::string buffer(H5Tget_size(type), '\0');
    ok = H5Aread(attr, type, buffer.data()) >= 0;
    value = buffer.c_str();  // fixed-size strings may be NUL-padded
  }
  H5Tclose(type);
  H5Aclose(attr);
  if (!ok) throw DataError(where + ": attribute '" + name + "' must be a string");
  return value;
}

int64_t read_int_attribute(hid_t object, const std::string& name, const std::string& where) {
  std::lock_guard<std::mutex> lock(library_lock());
  if (H5Aexists(object, name.c_str()) <= 0) throw DataError(where + ": missing attribute '" + name + "'");
  const hid_t attr = H5Aopen(object, name.c_str(), H5P_DEFAULT);
  const hid_t type = H5Aget_type(attr);
  int64_t value = 0;
  const bool ok = H5Tget_class(type) == H5T_INTEGER && H5Aread(attr, H5T_NATIVE_INT64, &value) >= 0;
  H5Tclose(type);
  H5Aclose(attr);
  if (!ok) throw DataError(where + ": attribute '" + name + "' must be an integer");
  return value;
}

bool has_link(hid_t location, const std::string& path) {
  std::lock_guard<std::mutex> lock(library_lock());
  return H5Lexists(location, path.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> list_groups(hid_t file, const std::string& path, const std::string& where) {
  std::lock_guard<std::mutex> lock(library_lock());
  const hid_t group = H5Gopen2(file, path.c_str(), H5P_DEFAULT);
  if (group < 0) throw DataError(where + ": cannot open group " + path + " (" + last_error_text() + ")");
  H5G_info_t info;
  H5Gget_info(group, &info);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string name(static_cast<size_t>(len), '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), len + 1, H5P_DEFAULT);
    H5O_info_t object;
#if H5_VERSION_GE(1, 12, 0)
    H5Oget_info_by_name3(group, name.c_str(), &object, H5O_INFO_BASIC, H5P_DEFAULT);
#else
    H5Oget_info_by_name(group, name.c_str(), &object, H5P_DEFAULT);
#endif
    if (object.type == H5O_TYPE_GROUP) names.push_back(name);
  }
  H5Gclose(group);
  return names;
}

ArraySpec describe_dataset(hid_t file, const std::string& path, const std::string& where, int64_t* rows) {
  std::lock_guard<std::mutex> lock(library_lock());
  const hid_t dataset = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
  if (dataset < 0) throw DataError(where + ": cannot open dataset (" + last_error_text() + ")");
  const hid_t type = H5Dget_type(dataset);
  const hid_t space = H5Dget_space(dataset);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(rank > 0 ? rank : 0);
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  H5Sclose(space);
  ArraySpec spec;
  try {
    spec.dtype = delivered_dtype(type, where);
  } catch (...) {
    H5Tclose(type);
    H5Dclose(dataset);
    throw;
  }
  H5Tclose(type);
  H5Dclose(dataset);
  if (rank < 1) throw DataError(where + ": a dataset of rows needs at least one axis (axis 0 = row), got a scalar");
  *rows = static_cast<int64_t>(dims[0]);
  for (int d = 1; d < rank; ++d) spec.row_shape.push_back(static_cast<int64_t>(dims[d]));
  return spec;
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return H5T_NATIVE_FLOAT;
    case DType::Float64: return H5T_NATIVE_DOUBLE;
    case DType::Int8: return H5T_NATIVE_INT8;
    case DType::UInt8: return H5T_NATIVE_UINT8;
    case DType::Int16: return H5T_NATIVE_INT16;
    case DType::Int32: return H5T_NATIVE_INT32;
    case DType::Int64: return H5T_NATIVE_INT64;
    default: throw Error("hdf5: no memory type for this dtype");
  }
}

}  // namespace qforge::h5
