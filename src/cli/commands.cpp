#include "cli/commands.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <regex>

#include "cli/progress_printer.h"
#include "compile/onnx_stage.h"
#include "compile/onnx_verify.h"
#include "graph/model.h"
#include "graph/model_json.h"
#include "output/output_dir.h"
#include "plan/layer_selection.h"
#include "qforge/compile.h"
#include "qforge/config_yaml.h"
#include "qforge/errors.h"
#include "qforge/runtime.h"
#include "qforge/version.h"
#include "report/report_html.h"
#include "runtime/logger.h"
#include "runtime/stop_signal.h"
#include "slurm/submission.h"
#include "util/fs.h"
#include "util/text.h"

namespace qforge::cli {
namespace {

const char* kMainHelp = R"(qforge: compile PyTorch models into quantized, deployable models on clusters

usage: qforge <command> [options]

commands:
  compile CONFIG      compile the experiment CONFIG (YAML); under mpirun/srun, in parallel
  submit CONFIG       submit the experiment to SLURM (a sweep as an array job)
  inspect MODEL       list a TorchScript model's layers and its method's inputs
  data check FILE...  validate calibration HDF5 files (optionally against a model)
  export OUT_DIR      write an earlier compile's model as ONNX again (other target, opset, float)
  report OUT_DIR...   draw report.html again from report.json (several: one page comparing them)
  config keys         list every experiment key with its default
  config show CONFIG  print the resolved experiment (defaults and --set applied)

options:
  -h, --help          help (also after a command: qforge compile --help)
  --version           versions of qforge and the libraries it links

exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 data, 5 model, 6 library (MPI/HDF5), 7 export
)";

const char* kCompileHelp = R"(usage: qforge compile CONFIG [--set KEY=VALUE]... [--dry-run] [--sweep-task I]

Compiles the experiment CONFIG. Launch with mpirun -np N (or srun) to run on N ranks.
Rank 0 writes to out_dir: model.qforge.pt (loads with torch.jit.load, no qforge needed),
quant_params.json, report.json, summary.txt and config.yaml; logs go to logs_dir.

  --set KEY=VALUE   override a key of CONFIG, e.g. --set calibration_inputs.batch_size=16;
                    keys holding dots go in brackets: --set 'layer_quantization_settings[fc.0].skip=true'
  --dry-run         validate config, data and model on every rank, print the plan, and write
                    only <out_dir>/plan.json and the logs (same as is_dry_run: true)
  --sweep-task I    compile setting I of the experiment's sweep into <out_dir>/sweep-<I>
                    (what each task of a `qforge submit` array job runs)
)";

const char* kSubmitHelp = R"(usage: qforge submit CONFIG [--set KEY=VALUE]... [--dry-run]

Submits the experiment CONFIG to SLURM: slurm/compile.sbatch with the experiment's resources
(nodes, tasks_per_node, gpus_per_node, cpus_per_task, memory, time, partition, account) as
#SBATCH lines, running `qforge compile CONFIG` on every rank through srun. A sweep in CONFIG
becomes an array job: task I compiles sweep[I] into <out_dir>/sweep-<I>. Every setting is
validated before anything is submitted. The script is kept as <out_dir>/submit.sbatch; the
job's log is <out_dir>/slurm-<job>.out (slurm-<job>_<I>.out in a sweep), each rank's is in
logs_dir. A job signalled before its time limit, or preempted, while fine-tuning writes a
checkpoint and requeues itself; the restarted job resumes from it.

  --set KEY=VALUE   override a key of CONFIG, as in qforge compile; the job gets the same overrides
  --dry-run         print the batch script and the sbatch command; submit and write nothing
)";

const char* kExportHelp = R"(usage: qforge export OUT_DIR [--target T] [--opset N] [--float] [-o FILE]

Writes the compiled model of an earlier `qforge compile` (OUT_DIR/model.qforge.pt, with the
experiment it resolved, OUT_DIR/config.yaml) as ONNX: integer weights behind DequantizeLinear,
activations through QuantizeLinear/DequantizeLinear pairs, checked against the target's rules.
The graph's inputs take their names, dtypes and symbolic axes from the experiment's data.

  --target T   tensorrt | onnxruntime | openvino | tensorrt_llm | libtorch (default: the experiment's)
  --opset N    13..21 (default: 17, or 21 when weights are 4-bit)
  --float      leave every quantizer out: the same graph in floating point (a baseline)
  -o FILE      where to write (default OUT_DIR/model.qforge.onnx; the file is replaced whole)
)";

const char* kReportHelp = R"(usage: qforge report OUT_DIR... [-o FILE]

Draws the report page of a compile (OUT_DIR/report.json) as one self-contained HTML file:
sensitivity and SQNR per layer, activation histograms with the chosen ranges, fine-tuning
loss, time per phase and rank, sizes, float / TorchScript / ONNX accuracy, a sortable table.
Several OUT_DIRs (or a sweep's out_dir, holding sweep-<i>/) make one page comparing them.

  -o FILE   where to write (default OUT_DIR/report.html for one compile, else report-sweep.html)
)";

const char* kInspectHelp = R"(usage: qforge inspect MODEL [--method NAME] [--json]

Lists every named submodule of the TorchScript model MODEL (name, type, parameters, weight
shape, quantizable or why not) and the inputs of the method (default forward).
)";

const char* kDataHelp = R"(usage: qforge data check FILE... [--model MODEL] [--method NAME] [--batch-size N]

Validates calibration HDF5 files: layout, dtypes, row counts, and that every row is finite.
With --model, also checks that the samples fit the model's method and runs one batch of each
shape group through it.
)";

const char* kConfigHelp = R"(usage: qforge config keys [--markdown]
       qforge config schema
       qforge config show CONFIG [--set KEY=VALUE]...

keys: every key of the experiment schema with its default and meaning.
schema: the schema as JSON: each section (its C++ struct's name) and key with its type,
        default, choices and meaning (the Python package's settings classes come from it).
show: the experiment as qforge resolves it.
)";

// One subcommand's command line, parsed by CLI11. The help is the text above
// (printed by the caller), so CLI11's generated help is off; an unknown option
// is reported with the nearest known one.
class CommandLine {
 public:
  explicit CommandLine(std::string command) : command_(std::move(command)), app_(command_) {
    app_.set_help_flag();
    app_.allow_extras();
    app_.add_flag("-h,--help", help_);
    app_.add_option("arguments", positional_);
  }
  CLI::App& app() { return app_; }
  // Every value of a repeated option (--set KEY=VALUE, in order).
  CLI::Option* add_repeated(const std::string& name, std::vector<std::string>& values) {
    return app_.add_option(name, values)->allow_extra_args(false);
  }
  // false: --help was asked for.
  bool parse(const std::vector<std::string>& argv);
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_;
  CLI::App app_;
  bool help_ = false;
  std::vector<std::string> positional_;
};

bool CommandLine::parse(const std::vector<std::string>& argv) {
  try {
    app_.parse(std::vector<std::string>(argv.rbegin(), argv.rend()));  // CLI11 takes them last first
  } catch (const CLI::ArgumentMismatch& e) {                           // CLI11 says "--opset: 1 required INT missing"
    const std::string what = e.what();
    throw UsageError(command_ + ": option " + what.substr(0, what.find(':')) + " needs a value (" + command_ +
                     " --help)");
  } catch (const CLI::ParseError& e) {
    throw UsageError(command_ + ": " + e.what() + " (" + command_ + " --help)");
  }
  if (help_) return false;
  const auto unknown = app_.remaining();
  if (unknown.empty()) return true;
  std::vector<std::string> known;
  for (const CLI::Option* option : app_.get_options())
    for (const auto& name : option->get_lnames()) known.push_back("--" + name);
  const auto near = nearest_names(unknown[0].substr(0, unknown[0].find('=')), known, 1);
  throw UsageError(command_ + ": unknown option " + unknown[0] +
                   (near.empty() ? "" : "; did you mean " + near[0] + "?") + " (" + command_ + " --help)");
}

// Checks the text before CLI11 converts it: "12abc" or "-1" is refused by name.
CLI::Validator integer_at_least(int64_t least) {
  return CLI::Validator(
      [least](std::string& text) -> std::string {
        const bool digits =
            !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
        if (digits && text.size() < 19 && std::stoll(text) >= least) return "";
        return (least == 0 ? "expects a non-negative integer"
                           : "expects an integer of at least " + std::to_string(least)) +
               ", got '" + text + "'";
      },
      "N");
}

int cmd_compile(const std::vector<std::string>& argv, bool users_terminal) {
  CommandLine line("qforge compile");
  std::vector<std::string> sets;
  bool dry_run = false;
  int64_t sweep_task = -1;
  line.add_repeated("--set", sets);
  line.app().add_flag("--dry-run", dry_run);
  line.app().add_option("--sweep-task", sweep_task)->check(integer_at_least(0));
  if (!line.parse(argv)) {
    std::cout << kCompileHelp;
    return kExitOk;
  }
  if (line.positional().size() != 1)
    throw UsageError("qforge compile: expected one CONFIG file (qforge compile --help)");
  const std::string& path = line.positional()[0];
  Runtime& rt = Runtime::get();
  Logger::instance().set_console(rt.is_root());
  ExperimentConfig config;
  std::optional<OutputDirectoryLock> lock;  // before the logs: a refused run writes nothing there
  rt.collective_phase("config", [&] {
    config = sweep_task >= 0 ? load_sweep_task(path, sets, sweep_task) : load_config(path, sets);
    if (dry_run) config.is_dry_run = true;
    if (rt.is_root()) lock.emplace(config.out_dir);
  });
  rt.collective_phase("logs", [&] { Logger::instance().open(config.effective_logs_dir(), rt.rank()); });
  log::debug("qforge " + version() + " rank " + std::to_string(rt.rank()) + " of " + std::to_string(rt.size()) +
             " on " + rt.host() + " (local rank " + std::to_string(rt.local_rank()) + ")");
  // SIGTERM / SIGUSR1 while fine-tuning: checkpoint and stop at the next step.
  // Without fine-tuning there is nothing to resume: SIGTERM and SIGINT end the run, with a line
  // saying so, and rank 0 removes its lock on out_dir.
  if (config.compile_options.fine_tune.enabled && !config.is_dry_run)
    install_stop_handlers();
  else
    install_ending_handlers(rt.is_root() ? (std::filesystem::weakly_canonical(config.out_dir) / ".qforge.lock").c_str()
                                         : "");
  ProgressPrinter progress(rt.is_root(), users_terminal, config.compile_options.fine_tune.log_every);
  CompileCallbacks callbacks;
  callbacks.fine_tune_progress = [&progress](const FineTuneProgress& p) { progress(p); };
  const CompileResult result = compile(config, callbacks);
  return result.stop_signal ? kExitStopped : kExitOk;
}

int cmd_submit(const std::vector<std::string>& argv) {
  CommandLine line("qforge submit");
  std::vector<std::string> sets;
  bool dry_run = false;
  line.add_repeated("--set", sets);
  line.app().add_flag("--dry-run", dry_run);
  if (!line.parse(argv)) {
    std::cout << kSubmitHelp;
    return kExitOk;
  }
  if (line.positional().size() != 1) throw UsageError("qforge submit: expected one CONFIG file (qforge submit --help)");
  const std::string path = line.positional()[0];
  const ExperimentConfig config = load_config(path, sets);
  // Every setting of a sweep loads here: a typo fails now, not hours later in the queue.
  std::vector<ExperimentConfig> tasks;
  for (size_t i = 0; i < config.sweep.size(); ++i)
    tasks.push_back(load_sweep_task(path, sets, static_cast<int64_t>(i)));
  const Submission submission{std::filesystem::absolute(path).lexically_normal().string(), sets,
                              std::filesystem::read_symlink("/proc/self/exe").string(),
                              std::filesystem::current_path().string()};
  const std::string script = render_batch_script(config, submission);
  const std::string script_path =
      (std::filesystem::absolute(config.out_dir) / "submit.sbatch").lexically_normal().string();
  const auto command = sbatch_command(script_path, submission);
  std::string command_line;
  for (const auto& word : command) command_line += (command_line.empty() ? "" : " ") + shell_quote(word);
  if (dry_run) {
    std::cout << script << "\n# submit with (run from " << submission.working_directory << "):\n# " << command_line
              << "\n";
    return kExitOk;
  }
  ensure_directory(config.out_dir);
  write_file_atomic(script_path, script);
  const std::string job = run_sbatch(command);
  const Resources& r = config.resources;
  std::cout << "qforge: submitted job " << job << ": " << r.nodes << " node(s) x " << ranks_per_node(r) << " rank(s)"
            << (r.gpus_per_node ? ", " + std::to_string(r.gpus_per_node) + " GPU(s) per node" : "") << "\n";
  std::cout << "  script: " << script_path << "\n";
  if (tasks.empty()) {
    std::cout << "  output: " << config.out_dir << "\n  log:    " << config.out_dir << "/slurm-" << job << ".out\n";
  } else {
    for (size_t i = 0; i < tasks.size(); ++i) {
      std::string settings;
      for (const auto& o : config.sweep[i]) settings += (settings.empty() ? "" : " ") + o;
      std::cout << "  task " << i << ": " << tasks[i].out_dir << "  (" << settings << ")  log " << config.out_dir
                << "/slurm-" << job << "_" << i << ".out\n";
    }
  }
  std::cout << "  watch:  squeue -j " << job << "\n";
  return kExitOk;
}

int cmd_export(const std::vector<std::string>& argv) {
  CommandLine line("qforge export");
  std::string target, output;
  int64_t opset = 0;
  bool float_only = false;
  const auto* target_option = line.app().add_option("--target", target);
  const auto* opset_option = line.app().add_option("--opset", opset)->check(integer_at_least(0));
  line.app().add_option("-o,--output", output);
  line.app().add_flag("--float", float_only);
  if (!line.parse(argv)) {
    std::cout << kExportHelp;
    return kExitOk;
  }
  if (line.positional().size() != 1) throw UsageError("qforge export: expected one OUT_DIR (qforge export --help)");
  const std::string dir = line.positional()[0];
  for (const std::string file : {"model.qforge.pt", "config.yaml"})
    if (!std::filesystem::exists(dir + "/" + file))
      throw UsageError("qforge export: " + dir + "/" + file + " not found; OUT_DIR must hold a finished compile");
  ExperimentConfig config = load_config(dir + "/config.yaml");
  if (!config.deployment_settings) config.deployment_settings = DeploymentSettings{};
  if (target_option->count()) config.deployment_settings->target = enum_from_string<Target>(target, "--target");
  if (opset_option->count()) config.deployment_settings->opset = opset;
  Model model = Model::load(dir + "/model.qforge.pt", config.model.method);
  const auto& data = config.calibration_inputs ? *config.calibration_inputs : *config.evaluation_inputs;
  const CallBinding binding =
      model.bind(inspect_dataset(data.files, data.groups, data.max_samples), config.forward.kwargs);
  std::vector<std::string> layers;
  for (const auto& l : model.layers()) layers.push_back(l.name);
  OnnxExportOptions options = onnx_options(config, layers);
  options.quantized = !float_only;
  const OnnxModel onnx = export_for_experiment(model.module(), config, binding, options);
  // Checked before it is written: against the compiled model, or the float one it computes without its quantizers.
  torch::jit::Module reference =
      float_only ? without_fake_quantization(model.module()) : model.module();
  const ForwardFn run = [&](torch::jit::Module& m, const Batch& b) {
    return run_module(m, config.model.method, binding, b, dir + "/model.qforge.pt");
  };
  OnnxSummary checked;
  verify_export(onnx, model.module(), reference, run, config, binding, options, {}, checked);
  const std::string path = output.empty() ? dir + "/model.qforge.onnx" : output;
  write_file_atomic(path, onnx.bytes);
  if (checked.not_verified.empty())
    std::cout << "qforge: checked against " << (float_only ? "the float model" : "model.qforge.pt")
              << " on fresh inputs in " << checked.runtime << ": " << join(checked.verified_on, "; ") << "\n";
  else
    std::cerr << "qforge export: note: not checked on fresh inputs: " << checked.not_verified << "\n";
  if (!checked.optimized_note.empty()) std::cerr << "qforge export: note: " << checked.optimized_note << "\n";
  for (const auto& note : onnx.notes) std::cerr << "qforge export: note: " << note << "\n";
  std::cout << "qforge: wrote " << path << " (" << onnx.bytes.size() << " bytes, opset " << onnx.opset << ", target "
            << to_string(options.target) << ", " << onnx.quantized_weights << " quantized weights, "
            << onnx.quantized_activations << " quantized activations)\n";
  return kExitOk;
}

// A compile's output directory, or a sweep's, as the (directory, report.json text) pairs it holds.
std::vector<std::pair<std::string, std::string>> reports_in(const std::string& dir) {
  namespace fs = std::filesystem;
  const auto read = [](const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  if (fs::exists(fs::path(dir) / "report.json")) return {{dir, read(fs::path(dir) / "report.json")}};
  std::vector<std::pair<std::string, std::string>> out;
  if (fs::is_directory(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().filename().string().rfind("sweep-", 0) == 0 && fs::exists(entry.path() / "report.json"))
        out.push_back({entry.path().string(), read(entry.path() / "report.json")});
  std::sort(out.begin(), out.end());
  if (out.empty()) throw UsageError("qforge report: " + dir + " holds no report.json (nor sweep-<i>/report.json)");
  return out;
}

int cmd_report(const std::vector<std::string>& argv) {
  CommandLine line("qforge report");
  std::string output;
  line.app().add_option("-o,--output", output);
  if (!line.parse(argv)) {
    std::cout << kReportHelp;
    return kExitOk;
  }
  if (line.positional().empty()) throw UsageError("qforge report: expected OUT_DIR (qforge report --help)");
  std::vector<std::pair<std::string, std::string>> runs;
  for (const auto& dir : line.positional())
    for (auto& run : reports_in(dir)) runs.push_back(std::move(run));
  const std::string fallback = runs.size() == 1 ? runs[0].first + "/report.html" : "report-sweep.html";
  const std::string path = output.empty() ? fallback : output;
  write_file_atomic(path, report_html(runs));
  std::cout << "qforge: wrote " << path << " (" << runs.size() << " compile(s))\n";
  return kExitOk;
}

int cmd_inspect(const std::vector<std::string>& argv) {
  CommandLine line("qforge inspect");
  std::string method = "forward";
  bool as_json = false;
  line.app().add_option("--method", method);
  line.app().add_flag("--json", as_json);
  if (!line.parse(argv)) {
    std::cout << kInspectHelp;
    return kExitOk;
  }
  if (line.positional().size() != 1)
    throw UsageError("qforge inspect: expected one MODEL file (qforge inspect --help)");
  Model model = Model::load(line.positional()[0], method);
  const auto layers = model.layers();
  const auto sig = model.signature();
  if (as_json) {
    json::object root;
    root["model"] = model.path();
    root["method"] = sig.to_string();
    root["inputs"] = to_json(sig.arguments);
    root["parameters"] = model.parameter_count();
    json::array list;
    for (const auto& l : layers) list.push_back(to_json(l));
    root["layers"] = list;
    std::cout << pretty_json(root);
    return kExitOk;
  }
  std::cout << model.path() << ": " << sig.to_string() << "\n";
  std::cout << "inputs:\n";
  for (const auto& a : sig.arguments)
    std::cout << "  " << a.name << ": " << a.type << (a.has_default ? " (has a default)" : "") << "\n";
  int quantizable = 0;
  for (const auto& l : layers) quantizable += l.quantizable;
  std::cout << "layers: " << layers.size() << " modules, " << quantizable << " quantizable, " << model.parameter_count()
            << " parameters\n";
  std::cout << "  " << std::left << std::setw(36) << "name" << std::setw(24) << "type" << std::setw(10) << "params"
            << std::setw(20) << "weight"
            << "quantizable\n";
  for (const auto& l : layers)
    std::cout << "  " << std::left << std::setw(36) << l.name << std::setw(24) << l.type << std::setw(10)
              << l.parameters << std::setw(20) << (l.weight_shape.empty() ? "-" : shape_text(l.weight_shape))
              << (l.quantizable ? "yes" : "no: " + l.reason)
              << (l.shares_weight_with.empty() ? "" : " (its weight is " + l.shares_weight_with + "'s: tied, counted once)")
              << "\n";
  return kExitOk;
}

int cmd_data(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::cout << kDataHelp;
    return argv.empty() ? kExitUsage : kExitOk;
  }
  if (argv[0] != "check") throw UsageError("qforge data: unknown subcommand '" + argv[0] + "' (qforge data --help)");
  CommandLine line("qforge data check");
  std::string model_path, method = "forward";
  int64_t batch_size = 64;
  line.app().add_option("--model", model_path);
  line.app().add_option("--method", method);
  line.app().add_option("--batch-size", batch_size)->check(integer_at_least(1));
  if (!line.parse({argv.begin() + 1, argv.end()})) {
    std::cout << kDataHelp;
    return kExitOk;
  }
  if (line.positional().empty()) throw UsageError("qforge data check: expected at least one HDF5 FILE");
  const DatasetInfo info = inspect_dataset(line.positional());
  std::cout << "inputs: " << to_string(info.kind) << " (";
  for (size_t i = 0; i < info.input_names.size(); ++i) std::cout << (i ? ", " : "") << info.input_names[i];
  std::cout << "), " << info.total_rows() << " rows in " << info.groups.size() << " shape group(s)\n";
  for (const auto& g : info.groups) {
    std::cout << "  " << g.path() << ": " << g.rows << " rows";
    for (const auto& in : g.inputs)
      std::cout << ", " << in.name << " " << shape_text(in.row_shape) << " " << to_string(in.dtype);
    if (g.has_labels) std::cout << ", labels " << shape_text(g.labels.row_shape) << " " << to_string(g.labels.dtype);
    std::cout << "\n";
  }
  std::optional<Model> model;
  CallBinding binding;
  if (!model_path.empty()) {
    model = Model::load(model_path, method);
    model->module().eval();
    binding = model->bind(info, {});
  }
  SampleReader reader(info, {0, info.total_rows()}, {batch_size, 2, true, {}});
  int last_group = -1;
  while (auto batch = reader.next()) {
    if (model && batch->group != last_group) {
      const auto out = model->run(binding, *batch);
      std::cout << "  " << info.groups[batch->group].name << ": " << model->method() << " ran on rows "
                << batch->global_begin << ".." << batch->global_begin + batch->rows() - 1 << "\n";
      last_group = batch->group;
    }
  }
  std::cout << "ok: every row is readable"
            << " and finite" << (model ? ", and the samples fit " + model->signature().to_string() : "") << "\n";
  return kExitOk;
}

int cmd_config(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::cout << kConfigHelp;
    return argv.empty() ? kExitUsage : kExitOk;
  }
  if (argv[0] == "keys") {
    CommandLine line("qforge config keys");
    bool md = false;
    line.app().add_flag("--markdown", md);
    if (!line.parse({argv.begin() + 1, argv.end()})) {
      std::cout << kConfigHelp;
      return kExitOk;
    }
    if (md) std::cout << "| key | default | meaning |\n| --- | --- | --- |\n";
    const auto keys = config_key_reference();
    size_t width = 0;
    for (const auto& k : keys) width = std::max(width, k.key.size() + 2);
    for (const auto& k : keys) {
      // A '|' inside a cell would end it: Markdown wants it escaped.
      if (md)
        std::cout << "| `" << k.key << "` | " << (k.default_value.empty() ? "" : "`" + k.default_value + "`") << " | "
                  << std::regex_replace(k.doc, std::regex("\\|"), "\\|") << " |\n";
      else
        std::cout << std::left << std::setw(static_cast<int>(width)) << k.key << std::setw(14) << k.default_value
                  << k.doc << "\n";
    }
    return kExitOk;
  }
  if (argv[0] == "schema") {
    std::cout << config_schema_json() << "\n";
    return kExitOk;
  }
  if (argv[0] == "show") {
    CommandLine line("qforge config show");
    std::vector<std::string> sets;
    line.add_repeated("--set", sets);
    if (!line.parse({argv.begin() + 1, argv.end()})) {
      std::cout << kConfigHelp;
      return kExitOk;
    }
    if (line.positional().size() != 1) throw UsageError("qforge config show: expected one CONFIG file");
    std::cout << config_to_yaml(load_config(line.positional()[0], sets));
    return kExitOk;
  }
  throw UsageError("qforge config: unknown subcommand '" + argv[0] + "' (qforge config --help)");
}

}  // namespace

int run_command_line(const std::vector<std::string>& args, bool users_terminal) {
  if (args.empty()) {
    std::cerr << kMainHelp;
    return kExitUsage;
  }
  const std::string& command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kMainHelp;
    return kExitOk;
  }
  if (command == "--version") {
    std::cout << build_info() << "\n";
    return kExitOk;
  }
  if (command == "compile") return cmd_compile(rest, users_terminal);
  if (command == "submit") return cmd_submit(rest);
  if (command == "inspect") return cmd_inspect(rest);
  if (command == "export") return cmd_export(rest);
  if (command == "report") return cmd_report(rest);
  if (command == "data") return cmd_data(rest);
  if (command == "config") return cmd_config(rest);
  const auto near = nearest_names(command, {"compile", "submit", "inspect", "export", "report", "data", "config"}, 1);
  throw UsageError("unknown command '" + command + "'; did you mean '" + near[0] + "'? (qforge --help)");
}

}  // namespace qforge::cli
