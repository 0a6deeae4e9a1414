#include "export/onnx_runtime.h"

#include <ATen/ATen.h>
#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qforge/errors.h"
#include "qforge_version_config.h"
#include "util/fs.h"
#include "util/json.h"

extern char** environ;

namespace qforge {
namespace {

namespace fs = std::filesystem;

constexpr int kNoRuntime = 3;  // the runners' exit code when their onnxruntime module is missing

std::string runners_dir() {
  if (const char* dir = std::getenv("QFORGE_RUNNERS_DIR")) return dir;
  if (fs::exists(QFORGE_RUNNERS_SOURCE_DIR)) return QFORGE_RUNNERS_SOURCE_DIR;
  return QFORGE_RUNNERS_INSTALL_DIR;
}

const std::vector<std::pair<std::string, at::ScalarType>>& dtype_names() {
  static const std::vector<std::pair<std::string, at::ScalarType>> names = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"int64", at::kLong}, {"int32", at::kInt},
      {"uint8", at::kByte},    {"int8", at::kChar},      {"bool", at::kBool},  {"float16", at::kHalf}};
  return names;
}

std::string dtype_name(at::ScalarType t) {
  for (const auto& [name, type] : dtype_names())
    if (type == t) return name;
  throw ExportError(std::string("onnxruntime runner: no transfer type for ") + c10::toString(t));
}

at::ScalarType dtype_of(const std::string& name) {
  for (const auto& [n, type] : dtype_names())
    if (n == name) return type;
  throw ExportError("onnxruntime runner: output of unsupported type " + name);
}

void write_raw(const std::string& path, const at::Tensor& t) {
  const at::Tensor c = t.contiguous().cpu();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  if (!out) throw Error("cannot write " + path);
}

at::Tensor read_raw(const std::string& path, const std::vector<int64_t>& shape, at::ScalarType type) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  std::ifstream in(path, std::ios::binary);
  in.read(static_cast<char*>(t.data_ptr()), t.numel() * t.element_size());
  if (!in) throw ExportError("onnxruntime runner: output file " + path + " is shorter than its shape says");
  return t;
}

// Runs argv with stdout and stderr in `log`; the exit code (-1 if it could not start).
int spawn(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int started = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (started != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

struct TemporaryDirectory {
  fs::path path;
  TemporaryDirectory() {
    std::string pattern = (fs::temp_directory_path() / "qforge-ort-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw Error("cannot make a temporary directory in " + fs::temp_directory_path().string());
    path = pattern;
  }
  ~TemporaryDirectory() { remove_tree(path.string()); }
};

}  // namespace

std::optional<OnnxRuntimeRun> run_in_onnxruntime(const std::string& model_path, const std::vector<std::string>& names,
                                                 const std::vector<at::Tensor>& inputs, int64_t batch_size,
                                                 std::string& why, const std::string& optimization) {
  TemporaryDirectory dir;
  json::object manifest;
  json::array list;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string file = (dir.path / ("input_" + std::to_string(i) + ".bin")).string();
    write_raw(file, inputs[i]);
    json::object o;
    o["name"] = names.at(i);
    o["dtype"] = dtype_name(inputs[i].scalar_type());
    o["shape"] = json::array(inputs[i].sizes().begin(), inputs[i].sizes().end());
    o["file"] = file;
    list.push_back(o);
  }
  manifest["inputs"] = list;
  manifest["batch_size"] = batch_size;
  manifest["threads"] = 0;
  manifest["graph_optimization_level"] = optimization;
  // 4-bit weights behind a blocked DequantizeLinear before MatMul become onnxruntime's
  // MatMulNBits, which by default also rounds the activations to int8 (accuracy level 4);
  // level 1 computes in float, as the file's weight-only scheme says.
  manifest["session_config"] = json::object{{"session.qdq_matmulnbits_accuracy_level", "1"}};
  manifest["outputs_dir"] = dir.path.string();
  const std::string manifest_path = (dir.path / "manifest.json").string();
  {
    std::ofstream out(manifest_path);
    out << json::serialize(manifest);
  }
  const std::string runners = runners_dir();
  const std::string log = (dir.path / "runner.log").string();
  std::vector<std::string> tried;
  for (const auto& [program, script] :
       {std::pair<std::string, std::string>{"node", "ort_run.js"}, {"python3", "ort_run.py"}}) {
    const std::string path = runners + "/" + script;
    if (!fs::exists(path)) continue;
    const int code = spawn({program, path, model_path, manifest_path}, log);
    if (code == -1 || code == 127 || code == kNoRuntime) {
      tried.push_back(program + " " + script + ": " +
                      (code == -1 || code == 127 ? program + " not found" : last_line(log)));
      continue;
    }
    if (code != 0)
      throw ExportError("onnxruntime (" + program + ") could not run " + model_path + ": " + last_line(log));
    std::ifstream in(dir.path / "outputs.json");
    std::stringstream text;
    text << in.rdbuf();
    const json::object result = json::parse(text.str()).as_object();
    OnnxRuntimeRun run;
    for (const auto& o : result.at("outputs").as_array()) {
      const auto& out = o.as_object();
      std::vector<int64_t> shape;
      for (const auto& d : out.at("shape").as_array()) shape.push_back(d.to_number<int64_t>());
      run.outputs.push_back(read_raw(json::value_to<std::string>(out.at("file")), shape,
                                     dtype_of(json::value_to<std::string>(out.at("dtype")))));
    }
    if (auto s = result.if_contains("seconds")) run.seconds = s->to_number<double>();
    run.runtime = result.if_contains("runtime") ? json::value_to<std::string>(result.at("runtime")) : program;
    return run;
  }
  why = tried.empty() ? "no runner scripts in " + runners : "no onnxruntime found (" + [&] {
    std::string s;
    for (const auto& t : tried) s += (s.empty() ? "" : "; ") + t;
    return s;
  }() + ")";
  return std::nullopt;
}

}  // namespace qforge
