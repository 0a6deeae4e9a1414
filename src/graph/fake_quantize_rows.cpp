#include "graph/fake_quantize_rows.h"

#include <torch/library.h>
#include <torch/torch.h>

#include "graph/fake_quantize_grid.h"

namespace qforge {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FakeQuantizeRows : public torch::autograd::Function<FakeQuantizeRows> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t axis, int64_t quant_min, int64_t quant_max) {
    FakeQuantized out = fake_quantize_on_grid(x, scale, zero_point, axis, quant_min, quant_max);
    ctx->save_for_backward({out.inside});  // inside the grid: the gradient passes
    return out.values;
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradients) {
    const at::Tensor inside = ctx->get_saved_variables()[0];
    return {gradients[0] * inside, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor fake_quantize_rows(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis,
                              int64_t quant_min, int64_t quant_max) {
  return FakeQuantizeRows::apply(x, scale, zero_point, axis, quant_min, quant_max);
}

}  // namespace qforge

TORCH_LIBRARY_FRAGMENT(qforge, m) {
  m.def(
      "qforge::fake_quantize_rows(Tensor x, Tensor scale, Tensor zero_point, int axis, int quant_min, int quant_max) "
      "-> Tensor",
      &qforge::fake_quantize_rows);
}
