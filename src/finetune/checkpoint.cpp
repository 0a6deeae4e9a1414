#include "finetune/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "qforge/errors.h"
#include "util/fs.h"

namespace qforge {
namespace {

constexpr int64_t kFormat = 1;
// The file: this magic, the archive's size and its FNV-1a hash (8 bytes each,
// little-endian), then LibTorch's archive. A file that does not match never
// reaches LibTorch's reader, which can crash on corrupt archives (found by
// fuzzing: a segmentation fault in its TorchScript type parser).
constexpr char kMagic[8] = {'Q', 'F', 'C', 'K', 'P', 'T', '0', '2'};
constexpr size_t kHeaderBytes = 24;
// What a user can do about a checkpoint that cannot be read.
constexpr const char* kStartOver = "; delete it, or set compile_options.fine_tune.resume: false to start over";

at::Tensor read_tensor(torch::serialize::InputArchive& archive, const std::string& key) {
  at::Tensor t;
  archive.read(key, t);
  return t.to(at::kCPU);  // metadata is read on the host; parameters are copied to their device
}

uint64_t fnv1a(const char* data, size_t size) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 1099511628211ull;
  return h;
}

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_u64(const std::string& in, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

// The header and the archive, as save_checkpoint writes them.
std::string envelope(const std::string& archive) {
  std::string out(kMagic, sizeof(kMagic));
  put_u64(out, archive.size());
  put_u64(out, fnv1a(archive.data(), archive.size()));
  return out + archive;
}

// The archive inside a checkpoint file; empty with `why` set when the file
// is not one whole qforge checkpoint.
std::string archive_in(const std::string& path, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof())
    why = "cannot be read";
  else if (file.size() < kHeaderBytes || file.compare(0, sizeof(kMagic), kMagic, sizeof(kMagic)) != 0)
    why = "no qforge checkpoint header";
  else if (get_u64(file, 8) != file.size() - kHeaderBytes)
    why = "truncated: " + std::to_string(file.size() - kHeaderBytes) + " of " + std::to_string(get_u64(file, 8)) +
          " bytes";
  else if (get_u64(file, 16) != fnv1a(file.data() + kHeaderBytes, file.size() - kHeaderBytes))
    why = "its contents do not match their checksum";
  return why.empty() ? file.substr(kHeaderBytes) : std::string();
}

// What LibTorch said, without its backtrace and source excerpts: it throws
// c10::Error, and std::runtime_error from its TorchScript parser.
std::string reason(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string what = c10_error ? c10_error->what_without_backtrace() : e.what();
  return what.substr(0, what.find('\n'));
}

}  // namespace

void save_checkpoint(const std::string& path, const std::string& fingerprint, const CheckpointState& state,
                     const std::vector<at::Tensor>& parameters, const torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  archive.write("format", at::tensor({kFormat}));
  archive.write("fingerprint", c10::IValue(fingerprint));
  archive.write("step", at::tensor({state.step}));
  archive.write("loss", at::tensor(state.loss, at::kDouble));
  for (size_t i = 0; i < parameters.size(); ++i)
    archive.write("parameter/" + std::to_string(i), parameters[i].detach());
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("cpu_generator", at::detail::getDefaultCPUGenerator().get_state());
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, envelope(bytes.str()));
}

CheckpointState load_checkpoint(const std::string& path, const std::string& fingerprint,
                                std::vector<at::Tensor>& parameters, torch::optim::Optimizer& optimizer) {
  torch::serialize::InputArchive archive;
  c10::IValue stored_fingerprint;
  CheckpointState state;
  try {
    // On the parameters' device: the optimizer's state must live where they do
    // (a checkpoint written from GPU 0 resumes on any GPU, or on the CPU).
    std::string why;
    std::istringstream bytes(archive_in(path, why));
    if (!why.empty()) throw DataError(path + ": cannot read the fine-tuning checkpoint (" + why + ")" + kStartOver);
    archive.load_from(bytes, parameters.empty() ? at::Device(at::kCPU) : parameters.front().device());
    if (read_tensor(archive, "format").item<int64_t>() != kFormat)
      throw DataError(path + ": unknown checkpoint format");
    archive.read("fingerprint", stored_fingerprint);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw DataError(path + ": cannot read the fine-tuning checkpoint (truncated, or not a qforge checkpoint): " +
                    reason(e) + kStartOver);
  }
  if (!stored_fingerprint.isString() || stored_fingerprint.toStringRef() != fingerprint)
    throw ConfigError(path +
                      ": the checkpoint belongs to another model or other fine-tuning settings (it was made for " +
                      (stored_fingerprint.isString() ? stored_fingerprint.toStringRef() : std::string("?")) +
                      "; this run is " + fingerprint + "); delete it or set compile_options.fine_tune.resume: false");
  try {
    state.step = read_tensor(archive, "step").item<int64_t>();
    const auto loss = read_tensor(archive, "loss").contiguous();
    state.loss.assign(loss.data_ptr<double>(), loss.data_ptr<double>() + loss.numel());
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < parameters.size(); ++i)
      parameters[i].copy_(read_tensor(archive, "parameter/" + std::to_string(i)));
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the process's generator
    generator.set_state(read_tensor(archive, "cpu_generator"));
  } catch (const std::exception& e) {
    throw DataError(path + ": the fine-tuning checkpoint is incomplete: " + reason(e) + kStartOver);
  }
  return state;
}

}  // namespace qforge
