// Moving a traced model to another device moves what its graphs hold too.
// No GPU here: the meta device stands in (tensors without data, so the checks
// are on where things are; tests/gpu runs a moved model on CUDA).
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/torch.h>

#include "graph/model.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;

namespace {

// Every tensor and device a graph holds as a constant, in `module`'s methods.
void graph_constants(const torch::jit::Module& module, std::vector<at::Tensor>& tensors,
                     std::vector<std::string>& devices) {
  for (const auto& m : module.modules())
    for (const auto& method : m.get_methods())
      for (const torch::jit::Node* n : torch::jit::toGraphFunction(method.function()).graph()->nodes()) {
        if (n->kind() != c10::prim::Constant || !n->hasAttribute(c10::attr::value)) continue;
        if (n->kindOf(c10::attr::value) == torch::jit::AttributeKind::t) tensors.push_back(n->t(c10::attr::value));
        if (n->output()->type()->kind() == c10::TypeKind::DeviceObjType) devices.push_back(n->s(c10::attr::value));
      }
}

}  // namespace

TEST(MoveModule, TracedConstantsAndDevicesFollowTheModel) {
  auto model = Model::load(asset("hf_llama_traced.pt"));
  std::vector<at::Tensor> tensors;
  std::vector<std::string> devices;
  graph_constants(model.module(), tensors, devices);
  ASSERT_FALSE(devices.empty());  // the trace recorded torch.arange(..., device=ids.device)
  for (const auto& d : devices) EXPECT_EQ(d, "cpu");

  move_module(model.module(), c10::Device(c10::kMeta));
  tensors.clear();
  devices.clear();
  graph_constants(model.module(), tensors, devices);
  ASSERT_FALSE(devices.empty());
  for (const auto& d : devices) EXPECT_EQ(d, "meta");
  for (const auto& t : tensors) EXPECT_TRUE(t.is_meta());
  for (const auto& p : model.module().parameters()) EXPECT_TRUE(p.is_meta());
  for (const auto& b : model.module().buffers()) EXPECT_TRUE(b.is_meta());
}

TEST(MoveModule, TiedWeightsStayOneTensor) {
  auto model = Model::load(asset("hf_llama_traced.pt"));
  const auto tied = [&] {
    const at::Tensor head = model.submodule("model.lm_head").attr("weight").toTensor();
    const at::Tensor embed = model.submodule("model.embed_tokens").attr("weight").toTensor();
    return head.storage().unsafeGetStorageImpl() == embed.storage().unsafeGetStorageImpl();
  };
  ASSERT_TRUE(tied());
  move_module(model.module(), c10::Device(c10::kMeta));
  EXPECT_TRUE(tied());
  EXPECT_TRUE(model.submodule("model.lm_head").attr("weight").toTensor().is_meta());
  // and the layers report it the same way on every device
  int sharing = 0;
  for (const auto& l : model.layers()) sharing += !l.shares_weight_with.empty();
  EXPECT_EQ(sharing, 2);
}
