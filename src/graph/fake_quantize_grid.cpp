#include "graph/fake_quantize_grid.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "qforge_version_config.h"
#if QFORGE_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "graph/fake_quantize_rows_cuda.h"
#endif

namespace qforge {

bool fits_row_kernels(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int64_t axis) {
#if QFORGE_HAVE_CUDA_KERNELS
  return x.is_cuda() && x.scalar_type() == at::kFloat && scale.scalar_type() == at::kFloat &&
         zero_point.scalar_type() == at::kInt && scale.device() == x.device() && zero_point.device() == x.device() &&
         (axis < 0 || (axis == 0 && x.dim() > 0));
#else
  (void)x, (void)scale, (void)zero_point, (void)axis;
  return false;
#endif
}

int64_t kernel_rows(const at::Tensor& x, int64_t axis) { return axis < 0 ? 1 : x.size(0); }

std::pair<at::Tensor, at::Tensor> broadcastable(const at::Tensor& x, const at::Tensor& scale,
                                                const at::Tensor& zero_point, int64_t axis) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  if (axis >= 0) shape[static_cast<size_t>(axis)] = x.size(axis);
  return {scale.to(at::kFloat).reshape(shape), zero_point.to(at::kFloat).reshape(shape)};
}

std::pair<at::Tensor, at::Tensor> codes_of(const at::Tensor& x, const at::Tensor& s, const at::Tensor& z,
                                           int64_t quant_min, int64_t quant_max) {
  const at::Tensor codes = at::round(x * (1.0f / s)) + z;  // as quantize_codes() and ATen's kernels
  return {codes, at::clamp(codes, static_cast<double>(quant_min), static_cast<double>(quant_max))};
}

FakeQuantized fake_quantize_on_grid(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                    int64_t axis, int64_t quant_min, int64_t quant_max) {
#if QFORGE_HAVE_CUDA_KERNELS
  if (fits_row_kernels(x, scale, zero_point, axis)) {
    const c10::cuda::CUDAGuard on_device(x.device());
    const at::Tensor values = x.contiguous(), s = scale.contiguous(), z = zero_point.contiguous();
    FakeQuantized out{at::empty_like(values), at::empty_like(values, values.options().dtype(at::kBool))};
    const int64_t rows = kernel_rows(values, axis);
    fake_quantize_rows_cuda(values.data_ptr<float>(), rows, values.numel() / std::max<int64_t>(rows, 1),
                            s.data_ptr<float>(), z.data_ptr<int32_t>(), quant_min, quant_max,
                            out.values.data_ptr<float>(), out.inside.data_ptr<bool>(),
                            c10::cuda::getCurrentCUDAStream().stream());
    return out;
  }
#endif
  const auto [s, z] = broadcastable(x, scale, zero_point, axis);
  const auto [codes, clamped] = codes_of(x, s, z, quant_min, quant_max);
  return {(clamped - z) * s, clamped == codes};
}

}  // namespace qforge
