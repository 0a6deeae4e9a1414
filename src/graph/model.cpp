// Loading a TorchScript model and binding samples to its method.
#include "graph/model.h"

#include <algorithm>

#include <torch/csrc/jit/passes/fold_conv_bn.h>

#include <filesystem>
#include <set>

#include "graph/transposed_linear.h"
#include "qforge/errors.h"
#include "util/text.h"

namespace qforge {
namespace {

bool is_tensor_type(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::TensorType) return true;
  if (type->kind() == c10::TypeKind::OptionalType)
    return type->expectRef<c10::OptionalType>().getElementType()->kind() == c10::TypeKind::TensorType;
  return false;
}

bool is_dict_of_tensors(const c10::TypePtr& type) {
  if (type->kind() != c10::TypeKind::DictType) return false;
  const auto& dict = type->expectRef<c10::DictType>();
  return dict.getKeyType()->kind() == c10::TypeKind::StringType &&
         dict.getValueType()->kind() == c10::TypeKind::TensorType;
}

// A YAML scalar (as text) converted to the argument's TorchScript type.
c10::IValue convert_kwarg(const std::string& text, const c10::TypePtr& declared, const std::string& where) {
  c10::TypePtr type = declared;
  if (type->kind() == c10::TypeKind::OptionalType) {
    if (text == "null" || text == "~" || text.empty()) return c10::IValue();
    type = type->expectRef<c10::OptionalType>().getElementType();
  }
  try {
    switch (type->kind()) {
      case c10::TypeKind::BoolType:
        if (text == "true" || text == "True") return true;
        if (text == "false" || text == "False") return false;
        break;
      case c10::TypeKind::IntType: {
        size_t used = 0;
        const long long v = std::stoll(text, &used);
        if (used == text.size()) return static_cast<int64_t>(v);
        break;
      }
      case c10::TypeKind::FloatType: {
        size_t used = 0;
        const double v = std::stod(text, &used);
        if (used == text.size()) return v;
        break;
      }
      case c10::TypeKind::StringType: return text;
      default:
        throw ModelError(where + ": arguments of type " + declared->str() +
                         " cannot be given as static kwargs (bool, int, float and str can)");
    }
  } catch (const std::logic_error&) {  // stoll/stod
  }
  throw ModelError(where + ": '" + text + "' is not a value of type " + type->str());
}

// The TorchScript interpreter's message carries two tracebacks; the cause is
// its last line ("RuntimeError: mat1 and mat2 shapes cannot be multiplied ...").
std::string interpreter_error_summary(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const auto last = text.rfind('\n');
  if (last != std::string::npos) text = text.substr(last + 1);
  if (text.size() > 600) text = text.substr(0, 600) + "...";
  return text;
}

}  // namespace

std::string MethodSignature::to_string() const {
  std::string out = method + "(";
  for (size_t i = 0; i < arguments.size(); ++i)
    out += (i ? ", " : "") + arguments[i].name + ": " + arguments[i].type + (arguments[i].has_default ? "=..." : "");
  return out + ") -> " + returns;
}

Model Model::load(const std::string& path, const std::string& method) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw ModelError(path + ": no such model file");
  Model model;
  model.path_ = path;
  model.method_ = method;
  try {
    model.module_ = torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    if (why.size() > 400) why = why.substr(0, 400) + "...";
    throw ModelError(path +
                     ": not a loadable TorchScript model (save it with torch.jit.trace/script(...).save()): " + why);
  }
  model.check_method();
  model.transposed_ = linears_from_transposed_layers(model.module_);
  return model;
}

Model Model::wrap(torch::jit::Module module, const std::string& name, const std::string& method) {
  Model model;
  model.path_ = name;
  model.method_ = method;
  model.module_ = std::move(module);
  model.check_method();
  model.transposed_ = linears_from_transposed_layers(model.module_);
  return model;
}

void Model::check_method() const {
  if (!module_.find_method(method_)) {
    std::vector<std::string> names;
    for (const auto& m : module_.get_methods()) names.push_back(m.name());
    throw ModelError(path_ + ": the model has no method '" + method_ + "'; it has: " + join(names));
  }
}

torch::jit::Module submodule(const torch::jit::Module& module, const std::string& path, const std::string& name) {
  torch::jit::Module current = module;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = std::min(path.find('.', start), path.size());
    const std::string part = path.substr(start, dot - start);
    if (!current.hasattr(part) || !current.attr(part).isModule())
      throw ModelError(name + ": no submodule '" + path + "' (qforge inspect lists the layers)");
    current = current.attr(part).toModule();
    start = dot + 1;
  }
  return current;
}

torch::jit::Module Model::submodule(const std::string& path) const { return qforge::submodule(module_, path, path_); }

MethodSignature Model::signature() const {
  const auto& schema = module_.get_method(method_).function().getSchema();
  MethodSignature sig;
  sig.method = method_;
  const auto& args = schema.arguments();
  for (size_t i = 1; i < args.size(); ++i)  // 0 is self
    sig.arguments.push_back({args[i].name(), args[i].type()->str(), args[i].default_value().has_value()});
  std::vector<std::string> returns;
  for (const auto& r : schema.returns()) returns.push_back(r.type()->str());
  sig.returns = join(returns);
  return sig;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  std::set<const void*> seen;  // tied parameters are one tensor
  for (const auto& p : module_.parameters())
    if (seen.insert(p.unsafeGetTensorImpl()).second) n += p.numel();
  return n;
}

int64_t Model::parameter_bytes() const {
  int64_t n = 0;
  std::set<const void*> seen;  // tied parameters are one tensor
  for (const auto& p : module_.parameters())
    if (seen.insert(p.data_ptr()).second) n += p.numel() * static_cast<int64_t>(p.element_size());
  return n;
}

CallBinding Model::bind(const DatasetInfo& data, const std::map<std::string, std::string>& kwargs) const {
  const auto& schema = module_.get_method(method_).function().getSchema();
  const auto& args = schema.arguments();
  const std::string where = path_ + ": " + signature().to_string();
  std::map<std::string, const c10::Argument*> by_name;
  for (size_t i = 1; i < args.size(); ++i) by_name[args[i].name()] = &args[i];

  CallBinding binding;
  binding.names = data.input_names;
  std::set<std::string> given;  // arguments the data or kwargs provide
  if (data.kind == InputKind::Dict && args.size() == 2 && is_dict_of_tensors(args[1].type())) {
    binding.mode = CallBinding::Mode::DictArgument;
    given.insert(args[1].name());
  } else if (data.kind == InputKind::Dict) {
    binding.mode = CallBinding::Mode::Keyword;
    for (const auto& name : data.input_names) {
      auto it = by_name.find(name);
      if (it == by_name.end())
        throw ModelError(where + ": the data's input '" + name + "' is not an argument of the method");
      if (!is_tensor_type(it->second->type()))
        throw ModelError(where + ": argument '" + name + "' is " + it->second->type()->str() + ", the data's input '" +
                         name + "' is a tensor");
      given.insert(name);
    }
  } else {
    binding.mode = CallBinding::Mode::Positional;
    if (data.input_names.size() > args.size() - 1)
      throw ModelError(where + ": the data has " + std::to_string(data.input_names.size()) + " inputs (" +
                       join(data.input_names) + ") but the method takes " + std::to_string(args.size() - 1) +
                       " arguments");
    for (size_t i = 0; i < data.input_names.size(); ++i) {
      const auto& arg = args[i + 1];
      if (!is_tensor_type(arg.type()))
        throw ModelError(where + ": argument " + std::to_string(i) + " '" + arg.name() + "' is " + arg.type()->str() +
                         ", the data's input '" + data.input_names[i] + "' is a tensor");
      given.insert(arg.name());
    }
  }
  for (const auto& [name, text] : kwargs) {
    auto it = by_name.find(name);
    if (it == by_name.end())
      throw ModelError(where + ": forward.kwargs names '" + name + "', which is not an argument of the method");
    if (given.count(name))
      throw ModelError(where + ": forward.kwargs sets '" + name + "', which the data already provides");
    binding.static_kwargs[name] = convert_kwarg(text, it->second->type(), where + ": forward.kwargs." + name);
    given.insert(name);
  }
  for (size_t i = 1; i < args.size(); ++i)
    if (!args[i].default_value() && !given.count(args[i].name()))
      throw ModelError(where + ": argument '" + args[i].name() + "' has no default and neither the data (inputs: " +
                       join(data.input_names) + ") nor forward.kwargs provide it");
  return binding;
}

c10::IValue run_module(torch::jit::Module& module, const std::string& method, const CallBinding& binding,
                       const Batch& batch, const std::string& what) {
  std::vector<c10::IValue> stack;
  torch::jit::Kwargs kwargs(binding.static_kwargs.begin(), binding.static_kwargs.end());
  switch (binding.mode) {
    case CallBinding::Mode::Positional:
      for (const auto& t : batch.inputs) stack.emplace_back(t);
      break;
    case CallBinding::Mode::Keyword:
      for (size_t i = 0; i < batch.inputs.size(); ++i) kwargs[binding.names[i]] = batch.inputs[i];
      break;
    case CallBinding::Mode::DictArgument: {
      c10::Dict<std::string, at::Tensor> dict;
      for (size_t i = 0; i < batch.inputs.size(); ++i) dict.insert(binding.names[i], batch.inputs[i]);
      stack.emplace_back(dict);
      break;
    }
  }
  try {
    return module.get_method(method)(std::move(stack), kwargs);
  } catch (const std::exception& e) {
    std::string shapes;
    for (size_t i = 0; i < batch.inputs.size(); ++i)
      shapes += (i ? ", " : "") + binding.names[i] + " " + c10::str(batch.inputs[i].sizes()) + " " +
                c10::toString(batch.inputs[i].scalar_type());
    // Floating data of another dtype than the weights' (float64 data, a bfloat16
    // model): the commonest mismatch, and its fix is one line of YAML.
    const auto name = [](at::ScalarType t) {
      return std::string(t == at::kDouble     ? "float64"
                         : t == at::kBFloat16 ? "bfloat16"
                         : t == at::kHalf     ? "float16"
                                              : "float32");
    };
    const at::ScalarType weights = module_float_dtype(module);
    std::string hint;
    const std::string cause = interpreter_error_summary(e);
    for (size_t i = 0; i < batch.inputs.size() && hint.empty(); ++i) {
      const at::ScalarType t = batch.inputs[i].scalar_type();
      if (at::isFloatingType(t) && t != weights)
        hint = "; the data is " + name(t) + ", the model's weights " + name(weights) +
               ": cast the data with data_transform: [{op: cast, dtype: " + name(weights) + "}]";
      // Integers the model takes as floats (int32 pixels), or as int64 where it wants those.
      else if (at::isIntegralType(t, /*includeBool=*/false) && t != at::kLong &&
               cause.find("type") != std::string::npos)
        hint = "; the data's '" + binding.names.at(i) + "' is " + c10::toString(t) +
               ": if the model takes it as floats, cast it with data_transform: [{op: cast, dtype: " + name(weights) +
               ", inputs: [" + binding.names.at(i) + "]}] (int64 for indices)";
    }
    throw ModelError(what + ": " + method + " failed on sample " + std::to_string(batch.global_begin) + " (" + shapes +
                     "): " + cause + hint);
  }
}

std::vector<std::string> Model::fold_conv_batch_norm() {
  std::map<std::string, at::Tensor> before;
  bool batch_norms = false;
  for (const auto& layer : layers()) {
    if (!layer.weight_shape.empty()) before[layer.name] = submodule(layer.name).attr("weight").toTensor();
    batch_norms = batch_norms || layer.type.rfind("BatchNorm", 0) == 0;
  }
  if (!batch_norms) return {};
  auto folded_module = torch::jit::FoldConvBatchNorm(module_);  // works on a clone
  tie_weights_like(module_, folded_module);
  module_ = folded_module;
  std::vector<std::string> folded;
  for (const auto& [name, weight] : before)
    if (!submodule(name).attr("weight").toTensor().equal(weight)) folded.push_back(name);
  return folded;
}

c10::IValue Model::run(const CallBinding& binding, const Batch& batch) {
  torch::NoGradGuard no_grad;
  return run_module(module_, method_, binding, batch, path_);
}

}  // namespace qforge
