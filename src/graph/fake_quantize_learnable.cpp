#include "graph/fake_quantize_learnable.h"

#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "graph/fake_quantize_grid.h"
#include "qforge_version_config.h"
#if QFORGE_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "graph/fake_quantize_rows_cuda.h"
#endif

namespace qforge {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// dx, and each element's term of the scale's gradient (shaped like x).
std::pair<at::Tensor, at::Tensor> gradients(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& scale,
                                            const at::Tensor& zero_point, int64_t axis, int64_t quant_min,
                                            int64_t quant_max) {
#if QFORGE_HAVE_CUDA_KERNELS
  if (fits_row_kernels(x, scale, zero_point, axis) && dy.scalar_type() == at::kFloat && dy.device() == x.device()) {
    const c10::cuda::CUDAGuard on_device(x.device());
    const at::Tensor values = x.contiguous(), g = dy.contiguous(), s = scale.contiguous(), z = zero_point.contiguous();
    at::Tensor dx = at::empty_like(values), dscale = at::empty_like(values);
    const int64_t rows = kernel_rows(values, axis);
    fake_quantize_rows_gradients_cuda(values.data_ptr<float>(), g.data_ptr<float>(), rows,
                                      values.numel() / std::max<int64_t>(rows, 1), s.data_ptr<float>(),
                                      z.data_ptr<int32_t>(), quant_min, quant_max, dx.data_ptr<float>(),
                                      dscale.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream());
    return {dx, dscale};
  }
#endif
  const auto [s, z] = broadcastable(x, scale, zero_point, axis);
  const auto [codes, clamped] = codes_of(x, s, z, quant_min, quant_max);
  const at::Tensor inside = clamped == codes;
  const at::Tensor y = (clamped - z) * s;
  const at::Tensor dscale = at::where(inside, dy * (y - x) * (1.0f / s), dy * (clamped - z));
  return {dy * inside, dscale};
}

// The scale's gradient: the element terms summed over every axis but `axis`.
at::Tensor sum_to_scale(const at::Tensor& terms, const at::Tensor& scale, int64_t axis) {
  if (axis < 0) return terms.sum().reshape(scale.sizes());
  std::vector<int64_t> others;
  for (int64_t d = 0; d < terms.dim(); ++d)
    if (d != axis) others.push_back(d);
  return (others.empty() ? terms : terms.sum(others)).reshape(scale.sizes());
}

class FakeQuantizeLearnable : public torch::autograd::Function<FakeQuantizeLearnable> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t axis, int64_t quant_min, int64_t quant_max) {
    ctx->save_for_backward({x, scale, zero_point});
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["quant_min"] = quant_min;
    ctx->saved_data["quant_max"] = quant_max;
    return fake_quantize_on_grid(x, scale, zero_point, axis, quant_min, quant_max).values;
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradients_in) {
    const auto saved = ctx->get_saved_variables();
    const int64_t axis = ctx->saved_data["axis"].toInt();
    const auto [dx, terms] = gradients(saved[0], gradients_in[0], saved[1], saved[2], axis,
                                       ctx->saved_data["quant_min"].toInt(), ctx->saved_data["quant_max"].toInt());
    return {dx, sum_to_scale(terms, saved[1], axis), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor fake_quantize_learnable(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                   int64_t axis, int64_t quant_min, int64_t quant_max) {
  return FakeQuantizeLearnable::apply(x, scale, zero_point, axis, quant_min, quant_max);
}

}  // namespace qforge

TORCH_LIBRARY_FRAGMENT(qforge, m) {
  m.def(
      "qforge::fake_quantize_learnable(Tensor x, Tensor scale, Tensor zero_point, int axis, int quant_min, "
      "int quant_max) -> Tensor",
      &qforge::fake_quantize_learnable);
}
