// A TorchScript model as qforge sees it: its layers (named submodules), the
// signature of the method to compile, and how one batch of samples is bound
// to that signature and run.
#pragma once
#include <torch/script.h>

#include <map>
#include <string>
#include <vector>

#include "graph/module_tensors.h"
#include "qforge/compile.h"

namespace qforge {

// The class name without "__torch__." and "___torch_mangle_N" parts: "Conv2d".
std::string short_type_name(const std::string& qualified);
// Layer types qforge quantizes: Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, Embedding, EmbeddingBag.
bool is_quantizable_type(const std::string& short_type);

// How a sample of the data is passed to the method: positional, keyword, or
// one Dict[str, Tensor] argument; plus the static keyword arguments from YAML.
struct CallBinding {
  enum class Mode { Positional, Keyword, DictArgument } mode = Mode::Positional;
  std::vector<std::string> names;  // input names, in data order
  std::map<std::string, c10::IValue> static_kwargs;
};

class Model {
 public:
  // Loads with torch::jit::load; ModelError names the file and why. Layers that
  // hold their weight transposed (GPT-2's Conv1D) become Linear layers
  // (graph/transposed_linear.h), here and in wrap().
  static Model load(const std::string& path, const std::string& method = "forward");
  // A module already in memory (C++ API); `name` stands for the path in messages.
  static Model wrap(torch::jit::Module module, const std::string& name, const std::string& method = "forward");

  torch::jit::Module& module() { return module_; }
  const torch::jit::Module& module() const { return module_; }
  const std::string& path() const { return path_; }
  const std::string& method() const { return method_; }
  // The layers loading rewrote as Linear layers (their weight was [inputs, outputs]).
  const std::vector<std::string>& transposed_layers() const { return transposed_; }

  // The submodule at a dotted path ("layer1.0.conv1"); ModelError if there is none.
  torch::jit::Module submodule(const std::string& path) const;

  // Every named submodule, in definition order (the root excluded).
  std::vector<LayerInfo> layers() const;
  MethodSignature signature() const;
  int64_t parameter_count() const;
  int64_t parameter_bytes() const;

  // Checks that samples of `data` fit the method and how to pass them;
  // `kwargs` are YAML scalars converted to the argument's type. ModelError
  // names the method, the argument and the input.
  CallBinding bind(const DatasetInfo& data, const std::map<std::string, std::string>& kwargs) const;

  // Runs the method on one batch, without autograd. Errors name the method
  // and the batch's first sample.
  c10::IValue run(const CallBinding& binding, const Batch& batch);

  // Folds each batch norm that follows a convolution into the convolution's
  // weight and bias (LibTorch's FoldConvBatchNorm); the model must be in eval
  // mode. Returns the convolutions whose weights changed.
  std::vector<std::string> fold_conv_batch_norm();

 private:
  void check_method() const;  // ModelError listing the methods when `method_` is missing

  torch::jit::Module module_;
  std::string path_;
  std::string method_;
  std::vector<std::string> transposed_;
};

// The submodule of `module` at a dotted path ("layer1.0.conv1"); ModelError
// naming `name` (the model's file, or what stands for it) if there is none.
torch::jit::Module submodule(const torch::jit::Module& module, const std::string& path, const std::string& name);

// Layers of `copy` (a clone of `original`) whose weights are one tensor in
// `original` share one tensor again: Module::clone copies each weight apart,
// which would store a tied table twice and let the two drift apart.
void tie_weights_like(const torch::jit::Module& original, torch::jit::Module& copy);
// A deep copy of `module` with tied weights kept tied.
torch::jit::Module clone_module(const torch::jit::Module& module);

// Runs `method` of `module` (the model or a rewritten copy of it) on one
// batch bound as `binding` says; errors name `what`, the method and the batch.
// Autograd follows the caller's mode.
c10::IValue run_module(torch::jit::Module& module, const std::string& method, const CallBinding& binding,
                       const Batch& batch, const std::string& what);

}  // namespace qforge
