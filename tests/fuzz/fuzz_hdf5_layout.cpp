// libFuzzer target: the calibration-file layout reader (qforge::inspect_dataset)
// over HDF5 files this harness writes from the fuzzer's bytes: the root
// attributes (format version, input kind, input names; right, wrong, missing or
// of another type), the /samples groups, and per group datasets of any dtype,
// rank and size, rows that agree or not, labels or not. Refusing with a
// qforge::Error is the expected way out; anything else is a bug. A layout that
// is accepted must describe what was written.
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "qforge/errors.h"

namespace {

const char* const kNames[] = {"x", "ids", "mask", "labels", "", " ", "a,b", "x y", "samples", "ids "};
const char* const kKinds[] = {"tensor", "tuple", "dict", "", "Tensor", "list"};

void fail(const char* what) {
  std::fprintf(stderr, "%s\n", what);
  std::abort();
}

void string_attribute(hid_t object, const char* name, const std::string& value) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size() + 1);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t attr = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attr, type, value.c_str());
  H5Aclose(attr);
  H5Sclose(space);
  H5Tclose(type);
}

void int_attribute(hid_t object, const char* name, int64_t value) {
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t attr = H5Acreate2(object, name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attr, H5T_NATIVE_INT64, &value);
  H5Aclose(attr);
  H5Sclose(space);
}

hid_t some_type(FuzzedDataProvider& in) {
  const hid_t types[] = {H5T_NATIVE_FLOAT, H5T_NATIVE_DOUBLE, H5T_NATIVE_INT64,  H5T_NATIVE_INT32,  H5T_NATIVE_UINT8,
                         H5T_NATIVE_INT8,  H5T_NATIVE_INT16,  H5T_NATIVE_UINT16, H5T_NATIVE_UINT64, H5T_C_S1};
  return types[in.ConsumeIntegralInRange<size_t>(0, std::size(types) - 1)];
}

// A dataset of zeros: rank 0..4, each axis 0..4 (axis 0 = rows).
void dataset(FuzzedDataProvider& in, hid_t group, const std::string& name, hsize_t rows) {
  const int rank = in.ConsumeIntegralInRange<int>(0, 4);
  std::vector<hsize_t> dims(rank);
  size_t count = 1;
  for (int d = 0; d < rank; ++d) {
    dims[d] = d == 0 && in.ConsumeBool() ? rows : in.ConsumeIntegralInRange<hsize_t>(0, 4);
    count *= dims[d];
  }
  const hid_t type = some_type(in);
  const hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr);
  const hid_t ds = H5Dcreate2(group, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (ds >= 0) {
    std::vector<char> zeros(count * 8 + 8, 0);
    if (count > 0 && type != H5T_C_S1) H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
    H5Dclose(ds);
  }
  H5Sclose(space);
}

void write_file(FuzzedDataProvider& in, const std::string& path) {
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) fail("cannot create the fuzz file");
  if (in.ConsumeBool()) {
    if (in.ConsumeBool())
      int_attribute(file, "qforge_format", in.ConsumeBool() ? 1 : in.ConsumeIntegral<int64_t>());
    else
      string_attribute(file, "qforge_format", "1");
  }
  if (in.ConsumeBool()) string_attribute(file, "input_kind", kKinds[in.ConsumeIntegralInRange<size_t>(0, 5)]);
  if (in.ConsumeBool()) int_attribute(file, "input_kind", 3);
  std::vector<std::string> names;
  for (int n = in.ConsumeIntegralInRange<int>(0, 3); n > 0; --n)
    names.push_back(kNames[in.ConsumeIntegralInRange<size_t>(0, 9)]);
  std::string joined;
  for (const auto& n : names) joined += (joined.empty() ? "" : ",") + n;
  if (in.ConsumeBool()) string_attribute(file, "input_names", joined);
  if (in.ConsumeBool()) {
    const hid_t samples = H5Gcreate2(file, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int g = in.ConsumeIntegralInRange<int>(0, 3); g > 0; --g) {
      const std::string group_name = in.ConsumeBool() ? "g" + std::to_string(g) : in.ConsumeRandomLengthString(8);
      const hid_t group = H5Gcreate2(samples, group_name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      if (group < 0) continue;  // an empty or repeated name
      const auto rows = in.ConsumeIntegralInRange<hsize_t>(0, 5);
      for (const auto& n : names)
        if (!n.empty() && in.ConsumeIntegralInRange<int>(0, 7) != 0) dataset(in, group, n, rows);
      if (in.ConsumeBool()) dataset(in, group, "labels", rows);
      H5Gclose(group);
    }
    H5Gclose(samples);
  } else if (in.ConsumeBool()) {
    dataset(in, file, "samples", 2);  // a dataset where the group belongs
  }
  H5Fclose(file);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] { return H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0; }();
  (void)quiet;
  FuzzedDataProvider in(data, size);
  const std::string path = "fuzz-" + std::to_string(::getpid()) + ".h5";
  write_file(in, path);
  std::vector<std::string> groups;
  if (in.ConsumeBool()) groups.push_back(in.ConsumeBool() ? "g1" : in.ConsumeRandomLengthString(4));
  const int64_t max_rows = in.ConsumeIntegralInRange<int64_t>(0, 6);
  try {
    const qforge::DatasetInfo info = qforge::inspect_dataset({path}, groups, max_rows);
    if (info.input_names.empty() || info.groups.empty()) fail("accepted a layout with no inputs or no groups");
    if (max_rows > 0 && info.total_rows() > max_rows) fail("more rows than max_rows");
    for (const auto& g : info.groups)
      if (g.rows <= 0 || g.inputs.size() != info.input_names.size()) fail("a group without rows or inputs");
  } catch (const qforge::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
