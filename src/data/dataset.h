// The calibration HDF5 layout (docs/data.md):
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

#include "qforge/compile.h"

namespace qforge {

// Opens every file, checks the layout (attributes, datasets, dtypes, axis-0
// sizes that agree within a group, kind and names that agree across files)
// and describes it. `groups` keeps only the named groups (error if one is
// missing); `max_rows` > 0 truncates the row space. Throws DataError naming
// the file and the dataset.
DatasetInfo inspect_dataset(const std::vector<std::string>& files, const std::vector<std::string>& groups = {},
                            int64_t max_rows = 0);

}  // namespace qforge
