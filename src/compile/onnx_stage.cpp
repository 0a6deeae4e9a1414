#include "compile/onnx_stage.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "compile/evaluation.h"
#include "compile/onnx_verify.h"
#include "export/onnx_runtime.h"
#include "qforge/errors.h"
#include "runtime/logger.h"

namespace qforge {

OnnxExportOptions onnx_options(const ExperimentConfig& config, const std::vector<std::string>& layer_names) {
  OnnxExportOptions o;
  if (config.deployment_settings) {
    o.target = config.deployment_settings->target;
    o.opset = config.deployment_settings->opset;
  }
  o.dynamic = config.dynamic;
  o.graph_name = config.effective_graph_name();
  o.layer_names = layer_names;
  return o;
}

namespace {

// The samples that shape the file's inputs: the tracing samples where the
// experiment has them (their shapes decide the dynamic axes, as clika_compile's
// tracing_inputs do), else the calibration or evaluation set.
CalibrationSettings example_data(const ExperimentConfig& config) {
  if (config.tracing_inputs && !config.tracing_inputs->files.empty()) {
    CalibrationSettings tracing;
    tracing.files = config.tracing_inputs->files;
    tracing.groups = config.tracing_inputs->groups;
    return tracing;
  }
  if (config.calibration_inputs) return *config.calibration_inputs;
  if (config.evaluation_inputs) return *config.evaluation_inputs;
  throw ConfigError(
      "ONNX export: the experiment has neither calibration_inputs nor evaluation_inputs to shape its inputs");
}

int64_t fixed_batch(const ExperimentConfig& config) {
  if (config.dynamic) return 2;
  return config.tracing_inputs && !config.tracing_inputs->batch_sizes.empty()
             ? config.tracing_inputs->batch_sizes.front()
             : 1;
}

// The file's outputs for rows [offset, offset + rows), in the structure of
// the TorchScript model's output, so that the two compare item by item: the
// file lists a tuple's items in order and a dict's entries by key (add_outputs
// in onnx_export.cpp).
c10::IValue onnx_result_like(const c10::IValue& reference, const std::vector<at::Tensor>& outputs, int64_t offset,
                             int64_t rows) {
  const auto take = [&](size_t i) {
    if (i >= outputs.size())
      throw Error("the ONNX file gives " + std::to_string(outputs.size()) + " outputs, fewer than the model's");
    return outputs[i].narrow(0, offset, rows);
  };
  if (reference.isTensor()) return take(0);
  // Entries that are None are not in the file (add_outputs).
  if (reference.isGenericDict()) {
    std::vector<c10::IValue> keys;
    for (const auto& e : reference.toGenericDict())
      if (!e.value().isNone()) keys.push_back(e.key());
    std::sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.toStringRef() < b.toStringRef(); });
    c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
    for (size_t i = 0; i < keys.size(); ++i) dict.insert(keys[i], take(i));
    return dict;
  }
  std::vector<c10::IValue> items;
  const auto elements = reference.isTuple() ? reference.toTupleRef().elements().vec() : reference.toListRef().vec();
  size_t next = 0;
  for (const auto& e : elements) items.push_back(e.isNone() ? c10::IValue() : c10::IValue(take(next++)));
  return c10::ivalue::Tuple::create(std::move(items));
}

}  // namespace

OnnxExamples onnx_examples(const ExperimentConfig& config, const DataTransformFn& transform) {
  const auto settings = example_data(config);
  OnnxExamples examples;
  examples.info = inspect_dataset(settings.files, settings.groups, settings.max_samples);
  const auto t = transform ? transform : make_transform(config.data_transform, examples.info);
  // Symbolic axes take any size; fixed ones (dynamic: false) take the first traced batch size.
  const int64_t rows = std::min<int64_t>(fixed_batch(config), examples.info.groups.at(0).rows);
  const auto batches = read_all(examples.info, {0, rows}, rows, t);
  examples.specs = onnx_inputs_for(examples.info, batches.at(0).inputs, config.dynamic);
  return examples;
}

OnnxModel export_for_experiment(const torch::jit::Module& compiled, const ExperimentConfig& config,
                                const CallBinding& binding, const OnnxExportOptions& options,
                                const DataTransformFn& transform) {
  return export_onnx(compiled, config.model.method, binding, onnx_examples(config, transform).specs, options);
}

void verify_export(const OnnxModel& onnx, const torch::jit::Module& compiled, torch::jit::Module& reference,
                   const ForwardFn& run, const ExperimentConfig& config, const CallBinding& binding,
                   const OnnxExportOptions& options, const DataTransformFn& transform, OnnxSummary& summary) {
  const OnnxExamples examples = onnx_examples(config, transform);
  // The search for the parting node converts the model the file must equal: for a float file, the
  // compiled model without its quantizers, whose intermediate values are the float ones.
  const torch::jit::Module& source = options.quantized ? compiled : reference;
  const auto convert = [&](const std::vector<OnnxInputSpec>& specs) {
    OnnxExportOptions probing = options;
    probing.probe = true;
    return export_onnx(source, config.model.method, binding, specs, probing);
  };
  const OnnxVerification v =
      verify_onnx(onnx, reference, run, examples.specs, examples.info, convert, config.dynamic,
                  options.quantized ? kMinOnnxSqnrDb : kMinFloatOnnxSqnrDb);
  summary.verified_on = v.batches;
  summary.verified_worst_db = v.worst_db;
  summary.verified_optimized_worst_db = v.optimized_worst_db;
  summary.optimized_note = v.optimized_note;
  summary.not_verified = v.not_verified;
  if (summary.runtime.empty()) summary.runtime = v.runtime;
}

void evaluate_onnx(const std::string& onnx_bytes, torch::jit::Module& compiled, const ForwardFn& run,
                   const ExperimentConfig& config, const DataTransformFn& transform, OnnxSummary& summary) {
  const auto& ev = *config.evaluation_inputs;
  const DatasetInfo info = inspect_dataset(ev.files, ev.groups, ev.max_samples);
  const auto t = transform ? transform : make_transform(config.data_transform, info);
  const auto batches = read_all(info, {0, info.total_rows()}, ev.batch_size, t);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("qforge-eval-" + std::to_string(::getpid()) + ".onnx")).string();
  {
    std::ofstream out(path, std::ios::binary);
    out << onnx_bytes;
  }
  EvaluationSums sums;
  try {
    for (size_t begin = 0; begin < batches.size();) {  // one onnxruntime run per shape group
      size_t end = begin;
      while (end < batches.size() && batches[end].group == batches[begin].group) ++end;
      std::vector<at::Tensor> stacked;
      for (size_t i = 0; i < info.input_names.size(); ++i) {
        std::vector<at::Tensor> parts;
        for (size_t k = begin; k < end; ++k) parts.push_back(batches[k].inputs[i]);
        stacked.push_back(at::cat(parts));
      }
      // A file with fixed sizes (dynamic: false) takes the first group's shape, in
      // batches of its batch size: other shapes, and the rows past the last whole
      // batch, are left out.
      const auto same_shape = [&](const at::Tensor& a, const at::Tensor& b) {
        return a.sizes().slice(1) == b.sizes().slice(1);
      };
      if (!config.dynamic && !same_shape(stacked.at(0), batches.front().inputs.at(0))) {
        begin = end;
        continue;
      }
      const int64_t run_batch = config.dynamic ? ev.batch_size : fixed_batch(config);
      const int64_t rows = stacked.at(0).size(0);
      const int64_t usable = config.dynamic ? rows : rows / run_batch * run_batch;
      if (usable == 0) {
        begin = end;
        continue;
      }
      for (auto& t : stacked) t = t.narrow(0, 0, usable);
      std::string why;
      const auto ran = run_in_onnxruntime(path, info.input_names, stacked, run_batch, why);
      if (!ran) {
        summary.not_evaluated = why;
        std::filesystem::remove(path);
        return;
      }
      summary.runtime = ran->runtime;
      int64_t offset = 0;
      for (size_t k = begin; k < end && offset + batches[k].rows() <= usable; ++k) {
        const Batch& batch = batches[k];
        const c10::IValue expected = run(compiled, batch);
        add_batch(sums, expected, onnx_result_like(expected, ran->outputs, offset, batch.rows()), batch);
        offset += batch.rows();
      }
      begin = end;
    }
  } catch (...) {
    std::filesystem::remove(path);
    throw;
  }
  std::filesystem::remove(path);
  EvaluationResult r = sums.counts;
  r.output_sqnr_db = sums.error.sqnr_db();
  summary.evaluation = r;
}

}  // namespace qforge
