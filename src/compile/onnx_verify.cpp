#include "compile/onnx_verify.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include "export/onnx_runtime.h"
#include "graph/module_tensors.h"
#include "metrics/output_error.h"
#include "qforge/errors.h"
#include "util/text.h"

namespace qforge {
namespace {

constexpr int64_t kFreshRows = 3;
const char* const kAsDefined = "basic";  // onnxruntime folds constants, and computes each node as ONNX defines it

// A size for a dynamic axis that no shape group has: between the smallest and the largest.
int64_t size_not_in_data(const std::set<int64_t>& sizes) {
  int64_t candidate = (*sizes.begin() + *sizes.rbegin()) / 2;
  while (sizes.count(candidate)) ++candidate;
  return candidate;
}

// Random values like the example's: floats with its mean and spread; integers
// uniform over its range (token ids stay in the vocabulary); 0/1 masks all ones
// (a random mask can hide a whole row, which no model is asked to compute).
at::Tensor fresh_like(const at::Tensor& example, const std::vector<int64_t>& shape, at::Generator& gen) {
  const auto options = example.options();
  if (at::isFloatingType(example.scalar_type())) {
    const at::Tensor e = example.to(at::kDouble);
    const double mean = e.mean().item<double>(), std = std::max(e.std().item<double>(), 1e-3);
    return (at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)) * std + mean).to(options);
  }
  const int64_t lo = example.min().item<int64_t>(), hi = example.max().item<int64_t>();
  if (example.scalar_type() == at::kBool || (lo >= 0 && hi <= 1)) return at::ones(shape, options);
  return at::randint(lo, hi + 1, shape, gen, options.dtype(at::kLong)).to(options);
}

// The fresh batches: each shape group of the data with kFreshRows rows (the
// batch fixed when the file's is), and once more with every dynamic axis at a
// size no group has.
std::vector<std::vector<at::Tensor>> fresh_batches(const std::vector<OnnxInputSpec>& specs, const DatasetInfo& info,
                                                   bool dynamic) {
  at::Generator gen = at::detail::createCPUGenerator(20261207);
  std::vector<std::vector<at::Tensor>> out;
  const auto batch_of = [&](const std::function<int64_t(size_t, size_t)>& size_of) {
    std::vector<at::Tensor> batch;
    for (size_t i = 0; i < specs.size(); ++i) {
      std::vector<int64_t> shape = specs[i].example.sizes().vec();
      for (size_t d = 0; d < shape.size(); ++d) shape[d] = size_of(i, d);
      batch.push_back(fresh_like(specs[i].example, shape, gen));
    }
    out.push_back(std::move(batch));
  };
  const auto fixed = [&](size_t i, size_t d) { return specs[i].example.size(static_cast<int64_t>(d)); };
  if (!dynamic) {
    batch_of(fixed);
    return out;
  }
  for (size_t g = 0; g < info.groups.size() && g < 4; ++g)
    batch_of([&](size_t i, size_t d) { return d == 0 ? kFreshRows : info.groups[g].inputs.at(i).row_shape.at(d - 1); });
  bool dynamic_axis = false;
  batch_of([&](size_t i, size_t d) {
    if (d == 0) return kFreshRows;
    if (specs[i].dim_names.at(d).empty()) return fixed(i, d);
    std::set<int64_t> sizes;
    for (const auto& group : info.groups) sizes.insert(group.inputs.at(i).row_shape.at(d - 1));
    dynamic_axis = true;
    return size_not_in_data(sizes);
  });
  if (!dynamic_axis) out.pop_back();  // the same shapes as a group's
  return out;
}

double sqnr_db(const at::Tensor& reference, const at::Tensor& x) {
  OutputError e;
  e.add(reference, x);
  return e.sqnr_db();
}

std::string shapes_text(const std::vector<OnnxInputSpec>& specs, const std::vector<at::Tensor>& batch) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < specs.size(); ++i) parts.push_back(specs[i].name + " " + c10::str(batch[i].sizes()));
  return join(parts);
}

std::string db_text(double db) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << db;
  return out.str();
}

// A temporary file holding `bytes`, removed with the object.
struct TemporaryFile {
  explicit TemporaryFile(const std::string& bytes, const std::string& stem) {
    path = (std::filesystem::temp_directory_path() / (stem + "-" + std::to_string(::getpid()) + ".onnx")).string();
    std::ofstream(path, std::ios::binary) << bytes;
  }
  ~TemporaryFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  std::string path;
};

std::vector<std::string> names_of(const std::vector<OnnxInputSpec>& specs) {
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  return names;
}

// The first node whose tensor the file computes differently from TorchScript,
// on `batch`. The file as written (converted on the data's examples) is run
// with every intermediate tensor an output; TorchScript's values for those
// tensors on `batch` come from converting once more with `batch` as the
// examples. Both conversions walk the same nodes in the same order, so the
// k-th probe of one is the k-th of the other; a value the first conversion
// took from the data's examples (folded where it should be computed) shows as
// the node where they part.
std::string first_parting_node(const std::vector<OnnxInputSpec>& specs, const std::vector<at::Tensor>& batch,
                               const std::function<OnnxModel(const std::vector<OnnxInputSpec>&)>& convert,
                               double min_db) {
  std::vector<OnnxInputSpec> on_batch = specs;
  for (size_t i = 0; i < on_batch.size(); ++i) on_batch[i].example = batch[i];
  const OnnxModel as_written = convert(specs);
  const std::vector<onnx_export::Probe> expected = convert(on_batch).probes;
  const TemporaryFile file(as_written.bytes, "qforge-probe");
  std::string why;
  const auto ran = run_in_onnxruntime(file.path, names_of(specs), batch, 0, why, kAsDefined);
  if (!ran) return "";
  const size_t first_probe = ran->outputs.size() - as_written.probes.size();
  for (size_t k = 0; k < as_written.probes.size() && k < expected.size(); ++k) {
    const auto& probe = as_written.probes[k];
    if (probe.node != expected[k].node) return "";  // the two walks differ (a loop unrolled otherwise): no verdict
    const at::Tensor got = ran->outputs.at(first_probe + k);
    if (got.sizes() != expected[k].expected.sizes())
      return probe.node + ": shape " + c10::str(got.sizes()) + " in the file, " +
             c10::str(expected[k].expected.sizes()) + " in the model";
    const double db = sqnr_db(expected[k].expected.to(at::kDouble), got.to(at::kDouble));
    if (!(db >= min_db)) return probe.node + ": " + db_text(db) + " dB";
  }
  return "";
}

// The batch once more with onnxruntime's optimizations on, as a deployment runs
// the file: Q/DQ pairs fused into integer kernels, whose arithmetic is the
// runtime's (rounding, accumulation) rather than the file's.
void measure_optimized(const std::string& path, const std::vector<std::string>& names,
                       const std::vector<at::Tensor>& batch, const std::vector<at::Tensor>& expected,
                       OnnxVerification& v) {
  std::string why;
  const auto ran = run_in_onnxruntime(path, names, batch, 0, why, "all");
  if (!ran) return;
  for (size_t i = 0; i < expected.size() && i < ran->outputs.size(); ++i)
    if (ran->outputs[i].sizes() == expected[i].sizes())
      v.optimized_worst_db =
          std::min(v.optimized_worst_db, sqnr_db(expected[i].to(at::kDouble), ran->outputs[i].to(at::kDouble)));
}

}  // namespace

OnnxVerification verify_onnx(const OnnxModel& onnx, torch::jit::Module& reference, const ForwardFn& run,
                             const std::vector<OnnxInputSpec>& examples, const DatasetInfo& info,
                             const std::function<OnnxModel(const std::vector<OnnxInputSpec>&)>& convert, bool dynamic,
                             double min_db) {
  OnnxVerification v;
  const TemporaryFile file(onnx.bytes, "qforge-verify");
  torch::NoGradGuard no_grad;
  for (const auto& batch : fresh_batches(examples, info, dynamic)) {
    Batch b;
    b.inputs = batch;
    const auto expected = output_tensors(run(reference, b));
    std::string why;
    const auto ran = run_in_onnxruntime(file.path, names_of(examples), batch, 0, why, kAsDefined);
    if (!ran) {
      v.not_verified = why;
      return v;
    }
    v.runtime = ran->runtime;
    const std::string shapes = shapes_text(examples, batch);
    std::vector<std::string> figures;
    for (size_t i = 0; i < expected.size(); ++i) {
      const std::string output = onnx.outputs.size() > i ? onnx.outputs[i] : "output " + std::to_string(i);
      if (i >= ran->outputs.size() || ran->outputs[i].sizes() != expected[i].sizes())
        throw ExportError("ONNX export: the file gives " + output + " of shape " +
                          (i < ran->outputs.size() ? c10::str(ran->outputs[i].sizes()) : std::string("(none)")) +
                          " on fresh inputs (" + shapes + "), the model " + c10::str(expected[i].sizes()) +
                          "; the file is not written");
      const double db = sqnr_db(expected[i].to(at::kDouble), ran->outputs[i].to(at::kDouble));
      v.worst_db = std::min(v.worst_db, db);
      figures.push_back(output + " " + db_text(db) + " dB");
      if (!(db >= min_db)) {
        const std::string node = first_parting_node(examples, batch, convert, min_db);
        throw ExportError("ONNX export: the file parts from the model on fresh inputs (" + shapes + "): " + output +
                          " at " + db_text(db) + " dB, below " + db_text(min_db) + " dB" +
                          (node.empty() ? std::string() : "; the first node where they part: " + node) +
                          ". The converter disagrees with the model there; the file is not written");
      }
    }
    measure_optimized(file.path, names_of(examples), batch, expected, v);
    v.batches.push_back(shapes + ": " + join(figures));
  }
  v.verified = true;
  if (!(v.optimized_worst_db >= min_db))
    v.optimized_note =
        "onnxruntime's optimized kernels (graph optimization level all: Q/DQ fused into integer "
        "kernels) compute this file at " +
        db_text(v.optimized_worst_db) +
        " dB against the model on fresh inputs, while the file as ONNX defines it is at " + db_text(v.worst_db) +
        " dB: that is onnxruntime's arithmetic on this CPU; check the "
        "accuracy in your deployment runtime, or run onnxruntime at graph optimization level basic";
  return v;
}

torch::jit::Module without_fake_quantization(const torch::jit::Module& compiled) {
  torch::jit::Module copy = compiled.clone();
  // Every graph: a scripted model's quantizers also sit in its submodules' methods.
  std::set<torch::jit::Node*> quantizers;
  edit_every_graph(copy, [&](torch::jit::Node* n) {
    if (std::string(n->kind().toQualString()).find("fake_quantize") != std::string::npos) quantizers.insert(n);
  });
  for (torch::jit::Node* n : quantizers) {
    n->output()->replaceAllUsesWith(n->input(0));
    n->destroy();
  }
  return copy;
}

}  // namespace qforge
