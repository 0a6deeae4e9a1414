#include "compile/artifacts.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <set>
#include <sstream>

#include "compile/structured_report.h"
#include "graph/model_json.h"
#include "output/artifact_set.h"
#include "qforge/config_yaml.h"
#include "report/report_html.h"
#include "runtime/peer_probe.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/text.h"

namespace qforge {
namespace {

json::array numbers(const at::Tensor& t) {
  const auto values = t.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
  return json::array(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
}

template <class Settings>  // TensorQuantSettings or WeightQuantSettings
json::object scheme_json(const Settings& s, const QuantRange& range) {
  json::object o = qforge::to_json(s);
  o["qmin"] = range.qmin;
  o["qmax"] = range.qmax;
  return o;
}

// A calibrated activation quantizer: scheme, range, scale and zero point.
json::object activation_json(const TensorQuantSettings& s, const QuantRange& range, const ActivationRange& r) {
  json::object a = scheme_json(s, range);
  a["range"] = json::array{r.lo, r.hi};
  a["scale"] = numbers(r.qparams.scale);
  a["zero_point"] = numbers(r.qparams.zero_point);
  return a;
}

json::object layer_params_json(const LayerResult& l) {
  json::object o;
  o["name"] = l.plan.layer.name;
  o["type"] = l.plan.layer.type;
  o["decision"] = l.quantized ? "quantize" : l.plan.tied ? "tied" : "float";
  if (!l.quantized) o["reason"] = l.reason;
  if (!l.plan.layer.shares_weight_with.empty()) o["shares_weight_with"] = l.plan.layer.shares_weight_with;
  if (l.quantized && l.weight) {
    json::object w = scheme_json(l.plan.weights, l.weight_range);
    w["axis"] = l.weight->axis;
    if (!l.weight->view_shape.empty())
      w["view_shape"] = json::array(l.weight->view_shape.begin(), l.weight->view_shape.end());
    w["scale"] = numbers(l.weight->qparams.scale);
    w["zero_point"] = numbers(l.weight->qparams.zero_point);
    o["weights"] = w;
  }
  if (l.quantized && l.input) o["activations"] = activation_json(l.plan.activations, l.input_range, *l.input);
  if (l.quantized && l.output) o["outputs"] = activation_json(l.plan.activations, l.output_range, *l.output);
  if (l.input_scaling) {
    const auto& s = *l.input_scaling;
    o["input_scaling"] = json::object{
        {"method", s.method},         {"alpha", s.alpha},
        {"divided_in", s.divided_in}, {"shared_with", json::array(s.shared_with.begin(), s.shared_with.end())},
        {"min_scale", s.min_scale},   {"max_scale", s.max_scale}};
  }
  if (l.sensitivity) o["sensitivity"] = *l.sensitivity;
  if (l.fine_tuned) o["fine_tuned"] = true;
  if (l.pruned) {
    const auto& p = *l.pruned;
    json::object pruning{
        {"method", p.method}, {"pattern", p.pattern}, {"planned_sparsity", p.planned}, {"sparsity", p.sparsity}};
    if (p.output_error) pruning["output_error"] = *p.output_error;
    o["pruning"] = pruning;
  } else if (!l.plan.dense_reason.empty()) {
    o["pruning"] = json::object{{"dense", l.plan.dense_reason}};
  }
  return o;
}

// Pruning over the whole model: the pruned layers' weights and the zeros among them.
struct PruningTotals {
  int64_t layers = 0, weights = 0, zeros = 0;
};

PruningTotals pruning_totals(const CompileResult& result) {
  PruningTotals t;
  for (const auto& l : result.layers) {
    if (!l.pruned) continue;
    const int64_t n = l.pruned->mask.numel();
    ++t.layers;
    t.weights += n;
    t.zeros += n - l.pruned->mask.sum().item<int64_t>();
  }
  return t;
}

// The pruned layers, one line each, after the layer table.
void write_pruning_text(std::ostream& out, const CompileResult& result) {
  const PruningTotals t = pruning_totals(result);
  if (t.layers == 0) return;
  out << "\n  pruning: " << t.layers << " layers, " << t.zeros << " of their " << t.weights << " weights zero ("
      << fixed(100.0 * static_cast<double>(t.zeros) / static_cast<double>(t.weights), 1) << "%)\n";
  for (const auto& l : result.layers) {
    if (!l.pruned) continue;
    const auto& p = *l.pruned;
    out << "    " << l.plan.layer.name << ": " << p.method << " " << p.pattern << ", " << fixed(100.0 * p.sparsity, 1)
        << "% zero" << (p.planned != p.sparsity ? " (planned " + fixed(100.0 * p.planned, 1) + "%)" : "")
        << (p.output_error ? ", relative output error " + fixed(*p.output_error, 5) : "") << "\n";
  }
}

// JSON has no infinity: an exact match is reported as null.
json::value finite_or_null(double v) { return std::isfinite(v) ? json::value(v) : json::value(nullptr); }

std::string percent(int64_t part, int64_t whole) { return whole ? fixed(100.0 * part / whole, 2) + "%" : "-"; }

// The sums of a reference model (`reference`: "float") against another
// (`other`: "compiled"), keyed by those names.
json::object evaluation_json(const EvaluationResult& e, const std::string& reference = "float",
                             const std::string& other = "compiled") {
  json::object ev;
  ev["rows"] = e.rows;
  ev["predictions"] = e.predictions;
  ev["labelled"] = e.labelled;
  if (e.labelled) {
    ev[reference + "_top1"] = static_cast<double>(e.fp_correct) / e.labelled;
    ev[other + "_top1"] = static_cast<double>(e.compiled_correct) / e.labelled;
    ev[reference + "_cross_entropy"] = e.fp_nll / e.labelled;
    ev[other + "_cross_entropy"] = e.compiled_nll / e.labelled;
    if (e.sequence) {
      ev[reference + "_perplexity"] = e.fp_perplexity();
      ev[other + "_perplexity"] = e.compiled_perplexity();
    }
  }
  if (e.predictions) ev["top1_agreement"] = static_cast<double>(e.top1_agreement) / e.predictions;
  ev["output_sqnr_db"] = finite_or_null(e.output_sqnr_db);
  return ev;
}

// The ONNX file run in onnxruntime against the TorchScript model ("float" in the sums).
json::object onnx_json(const OnnxSummary& o) {
  json::object out;
  out["file"] = "model.qforge.onnx";
  out["opset"] = o.opset;
  out["file_bytes"] = o.file_bytes;
  out["quantized_weights"] = o.quantized_weights;
  out["quantized_activations"] = o.quantized_activations;
  out["notes"] = json::array(o.notes.begin(), o.notes.end());
  if (o.not_verified.empty()) {
    out["fresh_inputs"] =
        json::object{{"runtime", o.runtime},
                     {"batches", json::array(o.verified_on.begin(), o.verified_on.end())},
                     {"worst_output_sqnr_db", finite_or_null(o.verified_worst_db)},
                     {"optimized_worst_output_sqnr_db", finite_or_null(o.verified_optimized_worst_db)}};
    if (!o.optimized_note.empty()) out["fresh_inputs"].as_object()["optimized_note"] = o.optimized_note;
  } else {
    out["not_verified"] = o.not_verified;
  }
  if (o.evaluation) {
    json::object ev = evaluation_json(*o.evaluation, "torchscript", "onnx");
    ev["runtime"] = o.runtime;
    out["evaluation"] = ev;
  } else {
    out["not_evaluated"] = o.not_evaluated;
  }
  return out;
}

// The hosts the ranks ran on, in the order of their first rank: [{name, ranks}].
json::array hosts_json(const std::vector<std::string>& rank_hosts) {
  std::vector<std::string> names;
  std::vector<json::array> ranks;
  for (size_t r = 0; r < rank_hosts.size(); ++r) {
    const size_t i = static_cast<size_t>(std::find(names.begin(), names.end(), rank_hosts[r]) - names.begin());
    if (i == names.size()) {
      names.push_back(rank_hosts[r]);
      ranks.emplace_back();
    }
    ranks[i].push_back(static_cast<int64_t>(r));
  }
  json::array hosts;
  for (size_t i = 0; i < names.size(); ++i) hosts.push_back(json::object{{"name", names[i]}, {"ranks", ranks[i]}});
  return hosts;
}

// " on 2 hosts: ranks 0, 1 on a, ranks 2, 3 on b" when the ranks span hosts.
std::string hosts_text(const std::vector<std::string>& rank_hosts) {
  std::vector<int> ranks(rank_hosts.size());
  for (size_t r = 0; r < ranks.size(); ++r) ranks[r] = static_cast<int>(r);
  const size_t distinct = std::set<std::string>(rank_hosts.begin(), rank_hosts.end()).size();
  if (distinct < 2) return "";
  return " on " + std::to_string(distinct) + " hosts: " + ranks_with_hosts(ranks, rank_hosts);
}

// " (gptq)" for a weight chosen by an algorithm other than rounding to nearest,
// " (smoothquant)" for an input smoothed before its quantization.
std::string algorithm_text(const LayerResult& l) {
  if (l.weight && l.plan.weights.algorithm != WeightAlgorithm::Rtn)
    return std::string(" (") + to_string(l.plan.weights.algorithm) + ")";
  if (l.input_scaling && l.input_scaling->method == "smoothquant" && l.input) return " (smoothquant)";
  return "";
}

}  // namespace

std::string evaluation_text(const EvaluationResult& e, const std::string& reference, const std::string& other) {
  std::ostringstream out;
  if (e.labelled) {
    out << "top-1 " << reference << " " << percent(e.fp_correct, e.labelled) << ", " << other << " "
        << percent(e.compiled_correct, e.labelled) << "; ";
    if (e.sequence)
      out << "perplexity " << reference << " " << fixed(e.fp_perplexity(), 3) << ", " << other << " "
          << fixed(e.compiled_perplexity(), 3) << "; ";
  }
  if (e.predictions) out << "top-1 agreement " << percent(e.top1_agreement, e.predictions) << ", ";
  out << "output SQNR " << fixed(e.output_sqnr_db, 1) << " dB";
  return out.str();
}

std::string evaluation_text(const EvaluationResult& e) { return evaluation_text(e, "float", "compiled"); }

std::string onnx_evaluation_text(const EvaluationResult& e) {
  return std::to_string(e.rows) + " held-out rows: " + evaluation_text(e, "TorchScript", "ONNX");
}

std::string quant_params_json(const CompileResult& result, const ExperimentConfig& config) {
  json::object root;
  root["format"] = "qforge.quant_params/1";
  root["graph_name"] = result.graph_name;
  root["target"] = config.deployment_settings ? to_string(config.deployment_settings->target) : "none";
  json::array layers;
  for (const auto& l : result.layers) layers.push_back(layer_params_json(l));
  root["layers"] = layers;
  json::array folded(result.folded_batch_norms.begin(), result.folded_batch_norms.end());
  root["folded_batch_norm_into"] = folded;
  return pretty_json(root);
}

std::string report_json(const CompileResult& result, const ExperimentConfig& config,
                        const std::vector<std::string>& rank_hosts) {
  json::object root;
  root["graph_name"] = result.graph_name;
  root["disabled"] = result.disabled;
  root["ranks"] = rank_hosts.size();
  root["hosts"] = hosts_json(rank_hosts);
  json::array layers;
  for (const auto& l : result.layers) {
    json::object o = layer_params_json(l);
    o["parameters"] = l.plan.layer.parameters;
    o["weight_shape"] = json::array(l.plan.layer.weight_shape.begin(), l.plan.layer.weight_shape.end());
    if (l.weight_sqnr_db) o["weight_sqnr_db"] = finite_or_null(*l.weight_sqnr_db);
    if (!l.input_histogram.counts.empty()) {
      json::object h;
      h["lo"] = l.input_histogram.lo;
      h["hi"] = l.input_histogram.hi;
      h["of_magnitude"] = l.input_histogram.magnitude;
      h["counts"] = json::array(l.input_histogram.counts.begin(), l.input_histogram.counts.end());
      o["input_histogram"] = h;
    }
    json::array matched(l.plan.matched.begin(), l.plan.matched.end());
    o["matched_settings"] = matched;
    layers.push_back(o);
  }
  root["layers"] = layers;
  if (const PruningTotals t = pruning_totals(result); t.layers > 0)
    root["pruning"] = json::object{{"layers", t.layers}, {"weights", t.weights}, {"zeros", t.zeros}};
  if (result.structured) root["structured_pruning"] = structured_json(*result.structured);
  json::object sizes;
  sizes["float_bytes"] = result.float_bytes;
  sizes["deployed_bytes"] = result.deployed_bytes;
  sizes["model_file_bytes"] = result.model_file_bytes;
  if (result.onnx.written) sizes["onnx_file_bytes"] = result.onnx.file_bytes;
  root["sizes"] = sizes;
  if (result.evaluation) root["evaluation"] = evaluation_json(*result.evaluation);
  if (result.onnx.written) root["onnx"] = onnx_json(result.onnx);
  if (result.fine_tune) {
    const auto& f = *result.fine_tune;
    json::object ft;
    ft["layers"] = json::array(f.layers.begin(), f.layers.end());
    ft["steps"] = static_cast<int64_t>(f.loss.size());
    ft["method"] = f.method;
    ft["loss"] = json::array(f.loss.begin(), f.loss.end());
    ft["learned_ranges"] = f.learned_ranges;
    json::array evaluations;
    for (const auto& e : f.evaluations) {
      json::object o = evaluation_json(e.result);
      o["step"] = e.step;
      evaluations.push_back(o);
    }
    ft["evaluations"] = evaluations;
    ft["seconds"] = f.seconds;
    ft["step_seconds"] = json::array(f.step_seconds.begin(), f.step_seconds.end());
    ft["teacher_outputs_reused"] = f.teacher_outputs_reused;
    ft["graph_replays"] = f.graph_replays;
    ft["samples_per_second"] = f.seconds > 0 ? static_cast<double>(f.samples) / f.seconds : 0.0;
    root["fine_tune"] = ft;
  }
  json::array phases;
  for (const auto& p : result.phases) {
    json::object o;
    o["phase"] = p.phase;
    o["seconds_per_rank"] = json::array(p.seconds_per_rank.begin(), p.seconds_per_rank.end());
    o["peak_bytes_per_rank"] = json::array(p.peak_bytes_per_rank.begin(), p.peak_bytes_per_rank.end());
    o["collectives"] = p.collectives;
    o["collective_bytes"] = p.collective_bytes;
    phases.push_back(o);
  }
  root["phases"] = phases;
  root["notes"] = json::array(result.notes.begin(), result.notes.end());
  root["config"] = config_to_yaml(config);
  return pretty_json(root);
}

std::string summary_text(const CompileResult& result, const std::vector<std::string>& rank_hosts) {
  std::ostringstream out;
  size_t quantized = 0, tied = 0;
  for (const auto& l : result.layers) {
    quantized += l.quantized;
    tied += !l.quantized && l.plan.tied;
  }
  out << "compiled '" << result.graph_name << "' on " << rank_hosts.size() << " rank(s)" << hosts_text(rank_hosts)
      << (result.disabled ? " (disable: true, model unchanged)" : "") << "\n";
  out << "  layers: " << quantized << " quantized, "
      << (tied ? std::to_string(tied) + " tied to a quantized one, " : "") << result.layers.size() - quantized - tied
      << " kept in floating point";
  if (!result.folded_batch_norms.empty()) out << "; " << result.folded_batch_norms.size() << " batch norms folded";
  out << "\n\n";
  std::vector<std::string> names, types;
  for (const auto& l : result.layers) {
    names.push_back(l.plan.layer.name);
    types.push_back(l.plan.layer.type);
  }
  const int name_width = static_cast<int>(column_width(names, 28)),
            type_width = static_cast<int>(column_width(types, 18));
  out << "  " << std::left << std::setw(name_width) << "layer" << std::setw(type_width) << "type" << std::right
      << std::setw(10) << "params" << std::setw(7) << "bits" << std::setw(13) << "sensitivity" << std::setw(10)
      << "SQNR dB"
      << "  decision\n";
  const std::string method = result.fine_tune && result.fine_tune->method == "lora" ? "LoRA" : "QA-LoRA";
  for (const auto& l : result.layers) {
    const std::string fine_tuned = l.fine_tuned ? " + " + method : "";
    const std::string bits = l.quantized ? (l.weight ? "w" + std::to_string(l.plan.weights.bits) : "w-") +
                                               (l.input ? "a" + std::to_string(l.plan.activations.bits) : "")
                             : l.plan.tied ? "tied"
                                           : "fp";
    out << "  " << std::left << std::setw(name_width) << l.plan.layer.name << std::setw(type_width) << l.plan.layer.type
        << std::right << std::setw(10) << l.plan.layer.parameters << std::setw(7) << bits << std::setw(13)
        << (l.sensitivity ? fixed(*l.sensitivity, 5) : "-") << std::setw(10)
        << (l.weight_sqnr_db ? fixed(*l.weight_sqnr_db, 1) : "-") << "  "
        << (l.quantized ? "quantize" + algorithm_text(l) + fine_tuned : (l.plan.tied ? "tied: " : "float: ") + l.reason)
        << "\n";
  }
  write_pruning_text(out, result);
  if (result.structured) write_structured_text(out, *result.structured, false);
  for (const auto& note : result.notes) out << "\n  note: " << note;
  if (!result.notes.empty()) out << "\n";
  out << "\n  model size: " << size_text(result.float_bytes) << " float -> " << size_text(result.deployed_bytes)
      << " deployed (quantized weights at their bit width); model.qforge.pt " << size_text(result.model_file_bytes)
      << "\n";
  if (result.onnx.written) {
    out << "  model.qforge.onnx " << size_text(result.onnx.file_bytes) << " (opset " << result.onnx.opset << ", "
        << result.onnx.quantized_weights << " quantized weights, " << result.onnx.quantized_activations
        << " quantized activations)\n";
    if (result.onnx.not_verified.empty())
      out << "  ONNX against model.qforge.pt on fresh inputs (" << result.onnx.verified_on.size()
          << " batch(es), every shape and each dynamic axis at a new size): worst output "
          << fixed(result.onnx.verified_worst_db, 1) << " dB as ONNX defines it, "
          << fixed(result.onnx.verified_optimized_worst_db, 1) << " dB with onnxruntime's optimized kernels\n";
    else
      out << "  ONNX not checked on fresh inputs: " << result.onnx.not_verified << "\n";
    if (result.onnx.evaluation)
      out << "  ONNX in " << result.onnx.runtime << " on " << onnx_evaluation_text(*result.onnx.evaluation) << "\n";
    else if (!result.onnx.not_evaluated.empty())
      out << "  ONNX not evaluated: " << result.onnx.not_evaluated << "\n";
  }
  if (result.fine_tune && !result.fine_tune->loss.empty()) {
    const auto& f = *result.fine_tune;
    out << "  fine-tune (" << f.method << "): " << f.layers.size() << " layers, " << f.loss.size() << " steps, loss "
        << f.loss.front() << " -> " << f.loss.back() << ", " << fixed(f.seconds > 0 ? f.samples / f.seconds : 0.0, 0)
        << " samples/s\n";
  }
  if (result.evaluation) {
    const auto& e = *result.evaluation;
    out << "  evaluation on " << e.rows << " held-out rows: " << evaluation_text(e) << "\n";
  }
  out << "  time per phase (seconds, rank 0 .. " << rank_hosts.size() - 1 << "; peak memory of the fullest rank):\n";
  std::vector<std::string> phase_names;  // the longest ("gptq, layers outside blocks: Hessians") sets the column
  for (const auto& p : result.phases) phase_names.push_back(p.phase);
  const int phase_width = static_cast<int>(column_width(phase_names, 26));
  for (const auto& p : result.phases) {
    out << "    " << std::left << std::setw(phase_width) << p.phase << std::right;
    for (double s : p.seconds_per_rank) out << std::setw(9) << fixed(s, 2);
    if (!p.peak_bytes_per_rank.empty())
      out << "   peak " << size_text(*std::max_element(p.peak_bytes_per_rank.begin(), p.peak_bytes_per_rank.end()));
    if (rank_hosts.size() > 1 && p.collectives > 0)
      out << "   " << p.collectives << " collective(s), " << fixed(static_cast<double>(p.collective_bytes) / 1024.0, 1)
          << " KiB";
    out << "\n";
  }
  return out.str();
}

void write_artifacts(CompileResult& result, const ExperimentConfig& config,
                     const std::vector<std::string>& rank_hosts) {
  const std::string dir = config.out_dir;
  ArtifactSet set(dir, {"model.qforge.pt", "model.qforge.onnx", "quant_params.json", "config.yaml", "summary.txt",
                        "report.json", "report.html"});
  const auto add = [&](const std::string& name, const std::string& key, const std::string& content) {
    set.add(name, content);
    result.artifacts[key] = dir + "/" + name;
  };
  // Streamed through qforge's writer: a full disk is an error that names the
  // file, not an abort inside LibTorch's.
  result.model_file_bytes = set.add_stream("model.qforge.pt", [&](std::ostream& out) { result.model.save(out); });
  result.artifacts["model"] = dir + "/model.qforge.pt";
  if (!result.onnx.bytes.empty()) {
    add("model.qforge.onnx", "onnx", result.onnx.bytes);
    result.onnx.file_bytes = static_cast<int64_t>(result.onnx.bytes.size());
    result.onnx.written = true;
  }
  add("quant_params.json", "quant_params", quant_params_json(result, config));
  add("config.yaml", "config", config_to_yaml(config));
  add("summary.txt", "summary", summary_text(result, rank_hosts));
  const std::string report = report_json(result, config, rank_hosts);
  add("report.json", "report", report);
  add("report.html", "report_page", report_html({{dir, report}}));
  set.commit();
  result.onnx.bytes.clear();
}

}  // namespace qforge
