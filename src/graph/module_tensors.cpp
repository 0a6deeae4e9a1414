#include "graph/module_tensors.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>

#include <functional>
#include <map>
#include <set>

namespace qforge {
namespace {

using torch::jit::Node;

bool reduced_float(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// Maps each storage once (its whole extent, as one flat tensor of the
// viewer's dtype); every tensor viewing it becomes the same view of the
// result, so tensors that shared memory still do.
class StorageRemap {
 public:
  using Map = std::function<at::Tensor(const at::Tensor&)>;
  // `applies`: which tensors change; `map`: a flat tensor to its new form.
  StorageRemap(std::function<bool(const at::Tensor&)> applies, Map map)
      : applies_(std::move(applies)), map_(std::move(map)) {}

  at::Tensor tensor(const at::Tensor& t) {
    if (!t.defined() || !applies_(t)) return t;
    if (!t.has_storage() || t.layout() != at::kStrided || t.is_quantized())
      return map_(t.detach()).requires_grad_(t.requires_grad());
    const auto key = std::make_pair(t.storage().unsafeGetStorageImpl(), t.scalar_type());
    auto found = done_.find(key);
    if (found == done_.end()) {
      const auto elements = static_cast<int64_t>(t.storage().nbytes() / t.element_size());
      const at::Tensor flat = at::empty({0}, t.options()).set_(t.storage(), 0, {elements}, {1});
      found = done_.emplace(key, map_(flat)).first;
    }
    at::Tensor view = at::empty({0}, found->second.options());
    view.set_(found->second.storage(), t.storage_offset(), t.sizes(), t.strides());
    return view.requires_grad_(t.requires_grad());
  }

  c10::IValue value(const c10::IValue& v) {
    if (v.isTensor()) return tensor(v.toTensor());
    if (v.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : v.toTensorList().vec()) out.push_back(tensor(t));
      return out;
    }
    if (v.isTuple()) {
      std::vector<c10::IValue> items;
      for (const auto& item : v.toTupleRef().elements()) items.push_back(value(item));
      return c10::ivalue::Tuple::create(std::move(items));
    }
    return v;
  }

 private:
  std::function<bool(const at::Tensor&)> applies_;
  Map map_;
  std::map<std::pair<c10::StorageImpl*, at::ScalarType>, at::Tensor> done_;
};

bool holds_tensors(const c10::IValue& v) {
  if (v.isTensor() || v.isTensorList()) return true;
  if (v.isTuple())
    for (const auto& item : v.toTupleRef().elements())
      if (holds_tensors(item)) return true;
  return false;
}

// The module's attributes and its graphs' tensor constants through `remap`;
// then the methods cloned afresh (a plan compiled for the old tensors dropped).
void remap_module(torch::jit::Module& module, StorageRemap& remap, const std::function<void(Node*)>& also) {
  torch::NoGradGuard no_grad;
  for (auto m : module.modules())
    for (const auto& attribute : m.named_attributes(/*recurse=*/false))
      if (!attribute.value.isModule() && holds_tensors(attribute.value))
        m.setattr(attribute.name, remap.value(attribute.value));
  edit_every_graph(module, [&](Node* n) {
    if (n->kind() == c10::prim::Constant && n->hasAttribute(c10::attr::value)) {
      if (n->kindOf(c10::attr::value) == torch::jit::AttributeKind::t) {
        const at::Tensor t = remap.tensor(n->t(c10::attr::value));
        n->t_(c10::attr::value, t);
        n->output()->inferTypeFrom(t);
      } else if (n->kindOf(c10::attr::value) == torch::jit::AttributeKind::ival &&
                 holds_tensors(n->ival(c10::attr::value))) {
        n->ival_(c10::attr::value, remap.value(n->ival(c10::attr::value)));
      }
    }
    also(n);
  });
  module = module.clone(/*inplace=*/true);
}

bool is_scalar_type_argument(const c10::Argument& argument) {
  c10::TypePtr type = argument.real_type();
  if (type->kind() == c10::TypeKind::OptionalType) type = type->expectRef<c10::OptionalType>().getElementType();
  return type->kind() == c10::TypeKind::ScalarTypeType;
}

// A dtype argument given as bfloat16 or float16 (a constant) becomes float32.
void widen_dtype_arguments(Node* n) {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (!schema) return;
  const auto& arguments = schema->arguments();
  for (size_t i = 0; i < n->inputs().size() && i < arguments.size(); ++i) {
    if (!is_scalar_type_argument(arguments[i])) continue;
    const auto value = torch::jit::toIValue(n->input(i));
    if (!value || !value->isInt() || !reduced_float(static_cast<at::ScalarType>(value->toInt()))) continue;
    torch::jit::WithInsertPoint here(n);
    n->replaceInput(i, n->owningGraph()->insertConstant(static_cast<int64_t>(at::kFloat)));
  }
}

}  // namespace

void edit_every_graph(torch::jit::Module& module, const std::function<void(Node*)>& edit) {
  std::vector<torch::jit::Function*> pending;
  for (const auto& m : module.modules())
    for (const auto& method : m.get_methods()) pending.push_back(&method.function());
  std::set<torch::jit::Function*> done;
  const std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* block) {
    for (Node* n : block->nodes()) {
      for (torch::jit::Block* inner : n->blocks()) walk(inner);
      if (n->kind() == c10::prim::CallFunction)
        if (auto function = n->input(0)->type()->cast<c10::FunctionType>()) pending.push_back(function->function());
      edit(n);
    }
  };
  while (!pending.empty()) {
    torch::jit::Function* function = pending.back();
    pending.pop_back();
    if (!done.insert(function).second || !function->isGraphFunction()) continue;
    auto& graph_function = torch::jit::toGraphFunction(*function);
    walk(graph_function.graph()->block());
    graph_function.clear_optimized_graphs();
  }
}

void move_module(torch::jit::Module& module, const c10::Device& device) {
  StorageRemap remap([&](const at::Tensor& t) { return t.device() != device; },
                     [&](const at::Tensor& t) { return t.to(device); });
  remap_module(module, remap, [&](Node* n) {
    if (n->kind() == c10::prim::Constant && n->hasAttribute(c10::attr::value) &&
        n->kindOf(c10::attr::value) == torch::jit::AttributeKind::s &&
        n->output()->type()->kind() == c10::TypeKind::DeviceObjType && c10::Device(n->s(c10::attr::value)) != device)
      n->s_(c10::attr::value, device.str());
  });
}

void cast_to_float32(torch::jit::Module& module) {
  StorageRemap remap([](const at::Tensor& t) { return reduced_float(t.scalar_type()); },
                     [](const at::Tensor& t) { return t.to(at::kFloat); });
  remap_module(module, remap, widen_dtype_arguments);
}

int make_device_portable(torch::jit::Module& module, const std::string& method) {
  auto graph = torch::jit::toGraphFunction(module.get_method(method).function()).graph();
  torch::jit::Value* input = nullptr;
  for (size_t i = 1; i < graph->inputs().size() && !input; ++i)
    if (graph->inputs()[i]->type()->kind() == c10::TypeKind::TensorType) input = graph->inputs()[i];
  std::vector<Node*> devices, tensors;
  const std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* block) {
    for (Node* n : block->nodes()) {
      for (torch::jit::Block* inner : n->blocks()) walk(inner);
      if (n->kind() != c10::prim::Constant || !n->hasAttribute(c10::attr::value)) continue;
      if (input && n->output()->type()->kind() == c10::TypeKind::DeviceObjType) devices.push_back(n);
      if (n->kindOf(c10::attr::value) == torch::jit::AttributeKind::t && n->t(c10::attr::value).dim() > 0)
        tensors.push_back(n);
    }
  };
  walk(graph->block());
  torch::jit::WithInsertPoint at_start(graph->block()->nodes().front());
  if (!devices.empty()) {
    torch::jit::Value* device = graph->insert(c10::prim::device, {input});
    for (Node* n : devices) n->output()->replaceAllUsesWith(device);
  }
  int k = 0;
  for (Node* n : tensors) {
    std::string name;
    do name = "_qforge_constant_" + std::to_string(k++);
    while (module.hasattr(name));
    module.register_buffer(name, n->t(c10::attr::value));
    n->output()->replaceAllUsesWith(graph->insertGetAttr(graph->inputs()[0], name));
  }
  for (Node* n : devices) n->destroy();
  for (Node* n : tensors) n->destroy();
  return static_cast<int>(devices.size() + tensors.size());
}

c10::Device module_device(const torch::jit::Module& module) {
  for (const auto& p : module.parameters()) return p.device();
  return c10::Device(c10::kCPU);
}

at::ScalarType module_float_dtype(const torch::jit::Module& module) {
  for (const auto& p : module.parameters())
    if (at::isFloatingType(p.scalar_type())) return p.scalar_type();
  return at::kFloat;
}

}  // namespace qforge
