// The dry run: every rank validates what it will touch; rank 0 reports.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "compile/onnx_stage.h"
#include "compile/session.h"
#include "compile/structured_report.h"
#include "graph/dynamic_axes.h"
#include "graph/fake_quant_graph.h"
#include "graph/model_json.h"
#include "graph/observe_op.h"
#include "plan/layer_selection.h"
#include "qforge/config_yaml.h"
#include "qforge/errors.h"
#include "qforge/runtime.h"
#include "runtime/device.h"
#include "runtime/logger.h"
#include "runtime/memory_peak.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/text.h"

namespace qforge {
namespace {

json::array to_json_array(const std::vector<int64_t>& v) { return json::array(v.begin(), v.end()); }

// Tracing samples: the first `b` rows of each tracing group, for each batch size b.
std::vector<Batch> tracing_batches(const ExperimentConfig& config, const DatasetInfo& calibration,
                                   const DataTransformFn& transform, DatasetInfo* info_out) {
  const auto& tracing = config.tracing_inputs;
  const std::vector<int64_t> sizes = tracing ? tracing->batch_sizes : std::vector<int64_t>{1};
  DatasetInfo info = tracing && !tracing->files.empty() ? inspect_dataset(tracing->files, tracing->groups)
                     : tracing && !tracing->groups.empty()
                         ? inspect_dataset(config.calibration_inputs->files, tracing->groups)
                         : calibration;
  if (info.kind != calibration.kind || info.input_names != calibration.input_names)
    throw DataError("tracing_inputs: the tracing files describe other inputs than the calibration files");
  std::vector<Batch> out;
  int64_t group_start = 0;
  for (size_t g = 0; g < info.groups.size(); ++g) {
    for (int64_t b : sizes) {
      if (b > info.groups[g].rows)
        throw DataError(info.groups[g].path() + ": tracing batch size " + std::to_string(b) + " needs " +
                        std::to_string(b) + " rows, the group has " + std::to_string(info.groups[g].rows));
      for (auto& batch : read_all(info, {group_start, group_start + b}, b, transform)) out.push_back(std::move(batch));
    }
    group_start += info.groups[g].rows;
  }
  *info_out = info;
  return out;
}

json::object layer_json(const LayerPlan& p) {
  json::object o = qforge::to_json(p.layer);  // name, type, parameters, weight shape
  o["decision"] = p.quantize ? "quantize" : "skip";
  if (!p.quantize) o["reason"] = p.reason;
  if (p.quantize) {
    o["weights"] = qforge::to_json(p.weights);
    o["activations"] = qforge::to_json(p.activations);
  }
  if (p.pruning)
    o["pruning"] = json::object{{"method", to_string(p.pruning->method)},
                                {"pattern", p.pruning->pattern()},
                                {"sparsity", p.pruning->sparsity}};
  else if (!p.dense_reason.empty())
    o["pruning"] = json::object{{"dense", p.dense_reason}};
  json::array matched;
  for (const auto& m : p.matched) matched.emplace_back(m);
  o["matched_settings"] = matched;
  return o;
}

// " + prune wanda 50%", " + prune 2:4 sparsegpt", " (dense: why)", or nothing without pruning_settings.
std::string pruning_text(const LayerPlan& p) {
  if (p.pruning)
    return std::string(" + prune ") + to_string(p.pruning->method) + " " +
           (p.pruning->m > 0 ? p.pruning->pattern() : fixed(100.0 * p.pruning->sparsity, 0) + "%");
  return p.dense_reason.empty() ? std::string() : " (dense: " + p.dense_reason + ")";
}

}  // namespace

std::string Plan::to_json() const {
  json::object root;
  root["graph_name"] = graph_name;
  root["method"] = signature.to_string();
  root["parameters"] = parameters;
  root["parameter_bytes"] = parameter_bytes;
  json::object data_json;
  data_json["input_kind"] = to_string(data.kind);
  json::array names(data.input_names.begin(), data.input_names.end());
  data_json["input_names"] = names;
  data_json["rows"] = data.total_rows();
  json::array groups;
  for (const auto& g : data.groups) {
    json::object go;
    go["path"] = g.path();
    go["rows"] = g.rows;
    json::array inputs;
    for (const auto& in : g.inputs) {
      json::object io;
      io["name"] = in.name;
      io["dtype"] = to_string(in.dtype);
      io["row_shape"] = to_json_array(in.row_shape);
      inputs.push_back(io);
    }
    go["inputs"] = inputs;
    go["labels"] = g.has_labels;
    groups.push_back(go);
  }
  data_json["groups"] = groups;
  root["data"] = data_json;
  json::array shard_json;
  for (const auto& s : shards) {
    json::object so;
    so["rank"] = s.rank;
    so["host"] = s.host;
    so["first_row"] = s.rows.begin;
    so["rows"] = s.rows.size();
    so["batches"] = s.batches;
    so["peak_rss_bytes"] = s.peak_rss_bytes;
    shard_json.push_back(so);
  }
  root["shards"] = shard_json;
  json::array axes_json;
  for (const auto& a : axes) {
    json::object ao;
    ao["input"] = a.input;
    ao["dynamic_axes"] = to_json_array(a.dynamic);
    ao["min_shape"] = to_json_array(a.min_shape);
    ao["max_shape"] = to_json_array(a.max_shape);
    axes_json.push_back(ao);
  }
  root["tracing"] = axes_json;
  json::array layer_list;
  for (const auto& l : layers) layer_list.push_back(layer_json(l));
  root["layers"] = layer_list;
  json::array other;
  for (const auto& l : all_layers)
    if (!l.quantizable) other.push_back(qforge::to_json(l));
  root["not_quantizable"] = other;
  if (structured) root["structured_pruning"] = structured_json(*structured);
  root["estimated_bytes_per_rank"] = estimated_bytes_per_rank;
  root["config"] = resolved_config;
  return pretty_json(root);
}

std::string Plan::to_text() const {
  std::ostringstream out;
  int quantized = 0;
  for (const auto& l : layers) quantized += l.quantize;
  out << "plan for '" << graph_name << "': " << signature.to_string() << "\n";
  out << "  model: " << parameters << " parameters (" << size_text(parameter_bytes) << ")\n";
  out << "  data: " << data.total_rows() << " rows in " << data.groups.size() << " shape group(s), "
      << to_string(data.kind) << " samples (" << join(data.input_names) << ")\n";
  out << "  ranks: " << shards.size() << "\n";
  for (const auto& s : shards)
    out << "    rank " << s.rank << " on " << s.host << ": "
        << (s.rows.size() ? "rows " + std::to_string(s.rows.begin) + ".." + std::to_string(s.rows.end - 1) + " ("
                          : std::string("no rows ("))
        << s.rows.size() << " rows, " << s.batches << " batches), peak memory " << size_text(s.peak_rss_bytes) << "\n";
  for (const auto& a : axes)
    out << "  input '" << a.input << "': shape " << shape_text(a.min_shape)
        << (a.dynamic.empty() ? std::string(", static")
                              : " .. " + shape_text(a.max_shape) + ", dynamic axes " + shape_text(a.dynamic))
        << "\n";
  out << "  layers: " << quantized << " to quantize, " << layers.size() - quantized
      << " quantizable kept in floating point, " << all_layers.size() - layers.size() << " other modules\n";
  std::vector<std::string> names, types;
  for (const auto& l : layers) {
    names.push_back(l.layer.name);
    types.push_back(l.layer.type);
  }
  const int name_width = static_cast<int>(column_width(names, 32)),
            type_width = static_cast<int>(column_width(types, 24));
  out << "    " << std::left << std::setw(name_width) << "layer" << std::setw(type_width) << "type" << std::setw(10)
      << "params" << std::setw(20) << "weight"
      << "decision\n";
  for (const auto& l : layers) {
    std::string decision =
        l.quantize
            ? "quantize w" + std::to_string(l.weights.bits) + "/" + to_string(l.weights.granularity) +
                  (l.weights.algorithm != WeightAlgorithm::Rtn ? std::string(" ") + to_string(l.weights.algorithm)
                                                               : std::string()) +
                  (l.activations.enabled ? " a" + std::to_string(l.activations.bits) : " a-fp") +
                  (l.smoothed ? " smoothquant" : "")
            : "skip: " + l.reason;
    decision += pruning_text(l);
    out << "    " << std::left << std::setw(name_width) << l.layer.name << std::setw(type_width) << l.layer.type
        << std::setw(10) << l.layer.parameters << std::setw(20) << shape_text(l.layer.weight_shape) << decision << "\n";
  }
  if (structured) write_structured_text(out, *structured, true);
  out << "  estimated memory per rank: " << size_text(estimated_bytes_per_rank) << "\n";
  return out.str();
}

namespace {

// Which activation points saw values on one batch per shape group of this
// rank's shard, reduced over the ranks (1: seen on some rank).
std::vector<int64_t> points_reached(CompileSession& session, const std::vector<Batch>& first_of_group) {
  const PreparedCompile& p = session.prepared();
  std::vector<ObservedTensor> tensors;
  for (const auto& point : p.points) tensors.push_back({point.layer, point.output});
  std::vector<int64_t> seen(p.points.size(), 0);
  torch::jit::Module observed =
      tensors.empty() ? p.model->module() : with_observers(p.model->module(), p.model->method(), tensors);
  {
    ObserveScope scope([&](int64_t point, const at::Tensor& x) {
      if (x.numel() > 0) seen.at(point) = 1;
    });
    for (const auto& batch : first_of_group) session.run(observed, batch);  // also: does the data fit the model?
  }
  if (seen.empty()) return seen;  // no points on any rank: nothing to reduce
  at::Tensor reduced = at::tensor(seen, at::kLong).to(p.placement.device);
  p.comm->all_reduce(reduced, {ReduceOp::Max});
  reduced = reduced.cpu();
  return std::vector<int64_t>(reduced.data_ptr<int64_t>(), reduced.data_ptr<int64_t>() + reduced.numel());
}

// Targets deployed as ONNX: the float graph converts now, so an operator or a
// branch ONNX cannot express fails before calibration, not at the export.
void check_onnx_conversion(const ExperimentConfig& config, const CompileCallbacks& callbacks,
                           const PreparedCompile& p) {
  if (!config.deployment_settings || !config.deployment_settings->writes_onnx() || config.disable) return;
  // A rewritten copy, as the compile exports: its graph inlined afresh (the model has
  // run by now, unoptimized, and its methods' cached graphs still call submodules).
  torch::jit::Module model = with_fake_quantization(p.model->module(), p.model->method(), {});
  move_module(model, c10::Device(c10::kCPU));  // the converter runs on the CPU, as the export does
  OnnxExportOptions options = onnx_options(config, {});
  options.quantized = false;
  const CallBinding binding = callbacks.forward ? p.model->bind(p.data, config.forward.kwargs) : p.binding;
  const OnnxModel onnx = export_for_experiment(model, config, binding, options, p.transform);
  log::info("ONNX: the float graph converts (opset " + std::to_string(onnx.opset) + ")");
}

}  // namespace

Plan dry_run(const ExperimentConfig& config, const CompileCallbacks& callbacks, torch::jit::Module* input) {
  Runtime& rt = Runtime::get();
  rt.collective_phase("plan", [&] {
    if (!config.calibration_inputs)
      throw ConfigError("calibration_inputs: a dry run needs calibration data to validate and shard");
  });
  // The compile's own first stage: load, bind, fold, plan.
  CompileSession session(config, callbacks, input);
  session.prepare();
  const PreparedCompile& p = session.prepared();
  Plan plan;
  plan.graph_name = config.effective_graph_name();
  plan.resolved_config = config_to_yaml(config);
  plan.signature = p.model->signature();
  plan.parameters = p.model->parameter_count();
  plan.parameter_bytes = p.model->parameter_bytes();
  plan.data = p.data;
  plan.all_layers = p.model->layers();
  plan.layers = p.plans;
  plan.structured = session.take_result().structured;
  const auto& cal = *config.calibration_inputs;
  const RowRange mine = shard_whole_batches(plan.data.group_rows(), cal.batch_size, rt.rank(), rt.size());
  log::debug("rank " + std::to_string(rt.rank()) + " reads rows " + std::to_string(mine.begin) + ".." +
             std::to_string(mine.end - 1));

  // Every row of the shard is read and checked; one batch per shape group runs
  // with the calibration observers in place.
  RankShard shard{rt.rank(), rt.host(), mine, 0, 0};
  std::vector<Batch> first_of_group;
  std::vector<int64_t> seen;
  rt.collective_phase("data", [&] {
    SampleReaderOptions options{cal.batch_size, cal.prefetch, cal.check_finite, p.transform};
    SampleReader reader(plan.data, mine, options);
    shard.batches = static_cast<int64_t>(reader.batch_count());
    int last_group = -1;
    while (auto batch = reader.next()) {
      if (batch->group != last_group) first_of_group.push_back(*batch);
      last_group = batch->group;
    }
    shard.peak_rss_bytes = peak_rss_bytes();
    log::debug("rank " + std::to_string(rt.rank()) + ": read and checked " + std::to_string(mine.size()) + " rows");
  });
  rt.collective_phase("reach", [&] {
    seen = points_reached(session, first_of_group);
    keep_unreached_layers_float(
        config, p.point_of, [&](int point) { return seen[point] != 0; }, plan.layers);
    if (p.quantizing) refuse_quantizing_nothing(plan.layers);
  });
  shard.peak_rss_bytes = std::max(shard.peak_rss_bytes, peak_rss_bytes());

  rt.collective_phase("trace", [&] {
    DatasetInfo tracing_info;
    const auto batches = tracing_batches(config, plan.data, p.transform, &tracing_info);
    std::vector<std::vector<std::vector<int64_t>>> shapes;
    torch::jit::Module model = p.model->module();
    for (const auto& batch : batches) {
      session.run(model, batch);
      std::vector<std::vector<int64_t>> sample;
      for (const auto& t : batch.inputs) sample.push_back(t.sizes().vec());
      shapes.push_back(sample);
    }
    plan.axes = find_dynamic_axes(plan.data.input_names, shapes);
  });

  rt.collective_phase(
      "onnx",
      [&] {
        if (rt.is_root()) check_onnx_conversion(config, callbacks, p);
      },
      Runtime::PhaseWork::RootOnly);

  // Shards of every rank, for the report on rank 0.
  const at::Tensor summary =
      at::tensor(std::vector<int64_t>{shard.rows.begin, shard.rows.end, shard.batches, shard.peak_rss_bytes});
  const at::Tensor all = p.comm->all_gather(summary);  // [ranks, 4]
  for (int r = 0; r < rt.size(); ++r) {
    const auto v = [&](int64_t i) { return all[r][i].item<int64_t>(); };
    plan.shards.push_back({r, rt.hosts()[r], {v(0), v(1)}, v(2), v(3)});
  }

  // Estimate: FP model + compiled copy + observers (a histogram per activation
  // point: a running window of up to 8× histogram_bins int64 bins, and the
  // final bins, up to as many again; the XᵀX of GPTQ's largest step: int64 sums and the float64
  // Hessian, inputs² each; AWQ's candidate errors of its largest step, grid
  // float64 copies of each weight) + prefetched batches; the measured peak of
  // the dry run covers activations.
  int64_t observers =
      static_cast<int64_t>(plan.layers.size()) *
      (config.quantization_settings ? config.quantization_settings->activations.histogram_bins * 8 * 16 : 0);
  const auto largest_step = [&](const SolveSteps& steps, const std::function<int64_t(const LayerInfo&)>& bytes_of) {
    int64_t largest = 0;
    for (const auto& step : steps.steps) {
      int64_t bytes = 0;
      for (const auto& l : plan.layers)
        if (std::find(step.layers.begin(), step.layers.end(), l.layer.name) != step.layers.end())
          bytes += bytes_of(l.layer);
      largest = std::max(largest, bytes);
    }
    return largest;
  };
  const int64_t awq_grid = config.quantization_settings ? config.quantization_settings->weights.awq.grid : 0;
  observers += std::max(
      largest_step(p.gptq_steps, [](const LayerInfo& l) { return 2 * 8 * l.weight_shape[1] * l.weight_shape[1]; }),
      largest_step(p.awq_steps,
                   [&](const LayerInfo& l) { return awq_grid * 8 * l.weight_shape[0] * l.weight_shape[1]; }));
  const int64_t buffers = (cal.prefetch + 1) * cal.batch_size * plan.data.bytes_per_row_max();
  int64_t measured = 0;
  for (const auto& s : plan.shards) measured = std::max(measured, s.peak_rss_bytes);
  plan.estimated_bytes_per_rank = std::max(measured, 2 * plan.parameter_bytes + observers + buffers);

  if (rt.is_root()) {
    log::info(plan.to_text());
    const std::string path = config.out_dir + "/plan.json";
    write_file_atomic(path, plan.to_json());
    log::info("plan written to " + path);
  }
  return plan;
}

}  // namespace qforge
