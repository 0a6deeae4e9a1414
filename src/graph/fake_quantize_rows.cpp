#include "graph/fake_quantize_rows.h"

#include <torch/library.h>
#include <torch/torch.h>

#include <vector>

#include "qforge_version_config.h"
#if QFORGE_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "graph/fake_quantize_rows_cuda.h"
#endif

namespace qforge {
namespace {

// The forward on a GPU in one kernel; false where it does not apply.
bool forward_on_gpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis,
                    int64_t quant_min, int64_t quant_max, at::Tensor& y, at::Tensor& inside) {
#if QFORGE_HAVE_CUDA_KERNELS
  if (!x.is_cuda() || x.scalar_type() != at::kFloat || axis != 0 || x.dim() == 0 || scale.scalar_type() != at::kFloat ||
      zero_point.scalar_type() != at::kInt || scale.device() != x.device() || zero_point.device() != x.device())
    return false;
  const c10::cuda::CUDAGuard on_device(x.device());
  const at::Tensor values = x.contiguous(), s = scale.contiguous(), z = zero_point.contiguous();
  y = at::empty_like(values);
  inside = at::empty_like(values, values.options().dtype(at::kBool));
  const int64_t rows = values.size(0);
  fake_quantize_rows_cuda(values.data_ptr<float>(), rows, rows == 0 ? 0 : values.numel() / rows, s.data_ptr<float>(),
                          z.data_ptr<int32_t>(), quant_min, quant_max, y.data_ptr<float>(), inside.data_ptr<bool>(),
                          c10::cuda::getCurrentCUDAStream().stream());
  return true;
#else
  return false;
#endif
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FakeQuantizeRows : public torch::autograd::Function<FakeQuantizeRows> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t axis, int64_t quant_min, int64_t quant_max) {
    at::Tensor y, inside;
    if (forward_on_gpu(x, scale, zero_point, axis, quant_min, quant_max, y, inside)) {
      ctx->save_for_backward({inside});
      return y;
    }
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[static_cast<size_t>(axis)] = x.size(axis);
    const at::Tensor s = scale.to(at::kFloat).reshape(shape), z = zero_point.to(at::kFloat).reshape(shape);
    const at::Tensor codes = at::round(x * (1.0f / s)) + z;  // as quantize_codes() and ATen's kernels
    const at::Tensor clamped = at::clamp(codes, static_cast<double>(quant_min), static_cast<double>(quant_max));
    ctx->save_for_backward({clamped == codes});  // inside the grid: the gradient passes
    return (clamped - z) * s;
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
