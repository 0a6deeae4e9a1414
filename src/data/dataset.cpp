// Validation and description of the calibration HDF5 layout (dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "data/hdf5_file.h"
#include "data/sample_format.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

InputKind parse_kind(const std::string& text, const std::string& where) {
  if (text == "tensor") return InputKind::Tensor;
  if (text == "tuple") return InputKind::Tuple;
  if (text == "dict") return InputKind::Dict;
  throw DataError(where + ": attribute input_kind is '" + text + "', expected tensor, tuple or dict");
}

}  // namespace

const char* to_string(InputKind kind) {
  switch (kind) {
    case InputKind::Tensor: return "tensor";
    case InputKind::Tuple: return "tuple";
    case InputKind::Dict: return "dict";
  }
  return "?";
}

int64_t DatasetInfo::total_rows() const {
  int64_t total = 0;
  for (const auto& g : groups) total += g.rows;
  return total;
}

std::vector<int64_t> DatasetInfo::group_rows() const {
  std::vector<int64_t> rows;
  for (const auto& g : groups) rows.push_back(g.rows);
  return rows;
}

int64_t DatasetInfo::bytes_per_row_max() const {
  int64_t best = 0;
  for (const auto& g : groups) {
    int64_t bytes = 0;
    auto add = [&](const ArraySpec& a) {
      int64_t n = dtype_size(a.dtype);
      for (auto d : a.row_shape) n *= d;
      bytes += n;
    };
    for (const auto& a : g.inputs) add(a);
    if (g.has_labels) add(g.labels);
    best = std::max(best, bytes);
  }
  return best;
}

DatasetInfo inspect_dataset(const std::vector<std::string>& files, const std::vector<std::string>& groups,
                            int64_t max_rows) {
  if (files.empty()) throw DataError("no calibration files given");
  DatasetInfo info;
  std::set<std::string> wanted(groups.begin(), groups.end()), found;
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string& path = files[f];
    const h5::Handle file = h5::open_file(path);
    const std::string root = path + ":/";
    const int64_t version = h5::read_int_attribute(file.get(), "qforge_format", root);
    if (version != kSampleFormatVersion)
      throw DataError(root + ": qforge_format is " + std::to_string(version) + ", this qforge reads format " +
                      std::to_string(kSampleFormatVersion));
    const InputKind kind = parse_kind(h5::read_string_attribute(file.get(), "input_kind", root), root);
    const auto names = split_names(h5::read_string_attribute(file.get(), "input_names", root));
    if (names.empty()) throw DataError(root + ": attribute input_names is empty; expected e.g. \"x\" or \"ids,mask\"");
    if (kind == InputKind::Tensor && names.size() != 1)
      throw DataError(root + ": input_kind tensor takes exactly one input name, got " + std::to_string(names.size()));
    if (f == 0) {
      info.kind = kind;
      info.input_names = names;
    } else if (kind != info.kind || names != info.input_names) {
      throw DataError(path + ": input_kind/input_names differ from " + files[0] +
                      "; every calibration file must describe the same inputs");
    }
    if (!h5::has_link(file.get(), "/samples"))
      throw DataError(root + ": missing group /samples (one subgroup per input shape)");
    const auto group_names = h5::list_groups(file.get(), "/samples", path);
    if (group_names.empty()) throw DataError(path + ":/samples: holds no shape groups");
    for (const auto& name : group_names) {
      if (!wanted.empty() && !wanted.count(name)) continue;
      found.insert(name);
      ShapeGroup group;
      group.file = path;
      group.name = name;
      bool first = true;
      for (const auto& input : names) {
        const std::string ds = "/samples/" + name + "/" + input;
        const std::string where = path + ":" + ds;
        if (!h5::has_link(file.get(), ds))
          throw DataError(where + ": missing dataset for input '" + input + "' (input_names lists it)");
        int64_t rows = 0;
        ArraySpec spec = h5::describe_dataset(file.get(), ds, where, &rows);
        spec.name = input;
        if (first)
          group.rows = rows;
        else if (rows != group.rows)
          throw DataError(where + ": has " + std::to_string(rows) + " rows but '" + names[0] + "' has " +
                          std::to_string(group.rows) + "; axis 0 must agree across a group's datasets");
        first = false;
        group.inputs.push_back(spec);
      }
      const std::string labels = "/samples/" + name + "/labels";
      if (h5::has_link(file.get(), labels)) {
        int64_t rows = 0;
        group.labels = h5::describe_dataset(file.get(), labels, path + ":" + labels, &rows);
        group.labels.name = "labels";
        group.has_labels = true;
        if (rows != group.rows)
          throw DataError(path + ":" + labels + ": has " + std::to_string(rows) + " rows, the inputs have " +
                          std::to_string(group.rows));
      }
      info.groups.push_back(std::move(group));
    }
  }
  for (const auto& name : wanted)
    if (!found.count(name)) throw DataError("shape group '" + name + "' is in none of the calibration files");
  const bool labelled = !info.groups.empty() && info.groups[0].has_labels;
  for (const auto& g : info.groups)
    if (g.has_labels != labelled) throw DataError(g.path() + ": labels must be present in every group or in none");
  if (max_rows > 0) {
    int64_t left = max_rows;
    for (auto& g : info.groups) {
      g.rows = std::min(g.rows, left);
      left -= g.rows;
    }
  }
  // A group without rows (an empty one, or one max_rows leaves out) has nothing to read.
  info.groups.erase(
      std::remove_if(info.groups.begin(), info.groups.end(), [](const ShapeGroup& g) { return g.rows == 0; }),
      info.groups.end());
  if (info.total_rows() == 0) throw DataError(files[0] + ": the calibration set holds no rows");
  return info;
}

}  // namespace qforge
