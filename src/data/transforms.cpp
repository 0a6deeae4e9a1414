// The YAML transform list: cast, scale, normalize, applied per batch.
#include <set>

#include "data/sample_reader.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::Float32: return at::kFloat;
    case DType::Float64: return at::kDouble;
    case DType::Float16: return at::kHalf;
    case DType::BFloat16: return at::kBFloat16;
    case DType::Int64: return at::kLong;
    case DType::Int32: return at::kInt;
    case DType::Int16: return at::kShort;
    case DType::Int8: return at::kChar;
    case DType::UInt8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  return at::kFloat;
}

at::Tensor apply_step(const TransformStep& step, const at::Tensor& t, const std::string& where) {
  switch (step.op) {
    case TransformOp::Cast: return t.to(to_scalar_type(step.dtype));
    case TransformOp::Scale: return (t.is_floating_point() ? t : t.to(at::kFloat)) * step.factor;
    case TransformOp::Normalize: {
      const int64_t axis = step.axis < 0 ? step.axis + t.dim() : step.axis;
      if (axis < 0 || axis >= t.dim() || t.size(axis) != static_cast<int64_t>(step.mean.size()))
        throw DataError(where + ": normalize expects axis " + std::to_string(step.axis) + " of size " +
                        std::to_string(step.mean.size()) + " (the length of mean/std), the batch has shape " +
                        c10::str(t.sizes()));
      std::vector<int64_t> shape(t.dim(), 1);
      shape[axis] = t.size(axis);
      const auto type = t.is_floating_point() ? t.scalar_type() : at::kFloat;
      const at::Tensor mean = at::tensor(step.mean, at::kDouble).to(t.device(), type).view(shape);
      const at::Tensor std = at::tensor(step.std, at::kDouble).to(t.device(), type).view(shape);
      return (t.to(type) - mean) / std;
    }
  }
  return t;
}

}  // namespace

DataTransformFn make_transform(const std::vector<TransformStep>& steps, const DatasetInfo& info) {
  if (steps.empty()) return {};
  const std::set<std::string> names(info.input_names.begin(), info.input_names.end());
  for (size_t i = 0; i < steps.size(); ++i)
    for (const auto& name : steps[i].inputs)
      if (!names.count(name))
        throw DataError("data_transform[" + std::to_string(i) + "].inputs names '" + name +
                        "', which is not an input of the data (input_names of the HDF5 file)");
  return [steps](Batch& batch, const DatasetInfo& info) {
    for (size_t i = 0; i < steps.size(); ++i) {
      const auto& step = steps[i];
      for (size_t k = 0; k < batch.inputs.size(); ++k) {
        const auto& name = info.input_names[k];
        if (!step.inputs.empty() && std::find(step.inputs.begin(), step.inputs.end(), name) == step.inputs.end())
          continue;
        batch.inputs[k] =
            apply_step(step, batch.inputs[k], "data_transform[" + std::to_string(i) + "] on input '" + name + "'");
      }
    }
  };
}

}  // namespace qforge
