// The calibration HDF5 layout (README, "Calibration data"):
//
//   /                     attributes  qforge_format = 1
//                                     input_kind  = "tensor" | "tuple" | "dict"
//                                     input_names = "x" or "input_ids,attention_mask"
//   /samples/<group>/<input_name>     one dataset per input, axis 0 = row
//   /samples/<group>/labels           optional, axis 0 = row
//
// One group holds rows of one shape; several groups give several shapes
// (dynamic axes). Groups are taken in file order, then name order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/config.h"

namespace qforge {

enum class InputKind { Tensor, Tuple, Dict };
const char* to_string(InputKind kind);

struct ArraySpec {
  std::string name;                // input name, or "labels"
  DType dtype = DType::Float32;    // type delivered (file types widen to the nearest supported one)
  std::vector<int64_t> row_shape;  // shape of one row (without axis 0)
};

struct ShapeGroup {
  std::string file;
  std::string name;  // group name under /samples
  int64_t rows = 0;
  std::vector<ArraySpec> inputs;  // in input_names order
  bool has_labels = false;
  ArraySpec labels;
  std::string path() const { return file + ":/samples/" + name; }
};

struct DatasetInfo {
  InputKind kind = InputKind::Tensor;
  std::vector<std::string> input_names;
  std::vector<ShapeGroup> groups;
  int64_t total_rows() const;
  std::vector<int64_t> group_rows() const;
  // Bytes of `rows` rows of the largest group (inputs and labels).
  int64_t bytes_per_row_max() const;
};

// Opens every file, checks the layout (attributes, datasets, dtypes, axis-0
// sizes that agree within a group, kind and names that agree across files)
// and describes it. `groups` keeps only the named groups (error if one is
// missing); `max_rows` > 0 truncates the row space. Throws DataError naming
// the file and the dataset.
DatasetInfo inspect_dataset(const std::vector<std::string>& files, const std::vector<std::string>& groups = {},
                            int64_t max_rows = 0);

}  // namespace qforge
