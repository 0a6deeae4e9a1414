// YAML spellings of the config enums.
#include <utility>

#include "qforge/config.h"
#include "qforge/config_yaml.h"
#include "qforge/errors.h"

namespace qforge {
namespace {

template <class E>
struct Names;
template <>
struct Names<Device> {
  static constexpr std::pair<Device, const char*> table[] = {
      {Device::Cpu, "cpu"}, {Device::Cuda, "cuda"}, {Device::Auto, "auto"}};
};
template <>
struct Names<Autocast> {
  static constexpr std::pair<Autocast, const char*> table[] = {
      {Autocast::Off, "off"}, {Autocast::BFloat16, "bf16"}, {Autocast::Float16, "fp16"}};
};
template <>
struct Names<MatmulPrecision> {
  static constexpr std::pair<MatmulPrecision, const char*> table[] = {{MatmulPrecision::Highest, "highest"},
                                                                      {MatmulPrecision::High, "high"}};
};
template <>
struct Names<Target> {
  static constexpr std::pair<Target, const char*> table[] = {
      {Target::None, "none"},         {Target::TensorRT, "tensorrt"},        {Target::OnnxRuntime, "onnxruntime"},
      {Target::OpenVino, "openvino"}, {Target::TensorRTLLM, "tensorrt_llm"}, {Target::LibTorch, "libtorch"}};
};
template <>
struct Names<Granularity> {
  static constexpr std::pair<Granularity, const char*> table[] = {
      {Granularity::Tensor, "tensor"}, {Granularity::Channel, "channel"}, {Granularity::Group, "group"}};
};
template <>
struct Names<Observer> {
  static constexpr std::pair<Observer, const char*> table[] = {{Observer::MinMax, "minmax"},
                                                               {Observer::Percentile, "percentile"},
                                                               {Observer::Entropy, "entropy"},
                                                               {Observer::Mse, "mse"}};
};
template <>
struct Names<WeightAlgorithm> {
  static constexpr std::pair<WeightAlgorithm, const char*> table[] = {
      {WeightAlgorithm::Rtn, "rtn"}, {WeightAlgorithm::Gptq, "gptq"}, {WeightAlgorithm::Awq, "awq"}};
};
template <>
struct Names<SmoothingMethod> {
  static constexpr std::pair<SmoothingMethod, const char*> table[] = {{SmoothingMethod::SmoothQuant, "smoothquant"}};
};
template <>
struct Names<BlockOffload> {
  static constexpr std::pair<BlockOffload, const char*> table[] = {
      {BlockOffload::Auto, "auto"}, {BlockOffload::Cpu, "cpu"}, {BlockOffload::None, "none"}};
};
template <>
struct Names<TransformOp> {
  static constexpr std::pair<TransformOp, const char*> table[] = {
      {TransformOp::Cast, "cast"}, {TransformOp::Scale, "scale"}, {TransformOp::Normalize, "normalize"}};
};
template <>
struct Names<Distillation> {
  static constexpr std::pair<Distillation, const char*> table[] = {{Distillation::Mse, "mse"},
                                                                   {Distillation::Kl, "kl"}};
};
template <>
struct Names<FineTuneMethod> {
  static constexpr std::pair<FineTuneMethod, const char*> table[] = {{FineTuneMethod::QaLora, "qa_lora"},
                                                                     {FineTuneMethod::Lora, "lora"}};
};
template <>
struct Names<PruningMethod> {
  static constexpr std::pair<PruningMethod, const char*> table[] = {
      {PruningMethod::Magnitude, "magnitude"},
      {PruningMethod::Wanda, "wanda"},
      {PruningMethod::SparseGpt, "sparsegpt"},
      {PruningMethod::Structured, "structured"}};
};
template <>
struct Names<ChannelImportance> {
  static constexpr std::pair<ChannelImportance, const char*> table[] = {
      {ChannelImportance::L1, "l1"}, {ChannelImportance::L2, "l2"}, {ChannelImportance::Activation, "activation"},
      {ChannelImportance::Taylor, "taylor"}};
};
template <>
struct Names<DType> {
  static constexpr std::pair<DType, const char*> table[] = {{DType::Float32, "float32"}, {DType::Float64, "float64"},
                                                            {DType::Float16, "float16"}, {DType::BFloat16, "bfloat16"},
                                                            {DType::Int64, "int64"},     {DType::Int32, "int32"},
                                                            {DType::Int16, "int16"},     {DType::Int8, "int8"},
                                                            {DType::UInt8, "uint8"},     {DType::Bool, "bool"}};
};

}  // namespace

template <class E>
const char* to_string(E value) {
  for (const auto& [v, name] : Names<E>::table)
    if (v == value) return name;
  return "?";
}

template <class E>
E enum_from_string(const std::string& text, const std::string& key_path) {
  std::vector<std::string> valid;
  for (const auto& [v, name] : Names<E>::table) {
    if (text == name) return v;
    valid.emplace_back(name);
  }
  std::string list;
  for (const auto& n : valid) list += (list.empty() ? "" : ", ") + n;
  // A name the text begins (`onnx` for onnxruntime) before the nearest by edits (`none`).
  std::vector<std::string> near;
  for (const auto& n : valid)
    if (!text.empty() && n.rfind(text, 0) == 0) near.push_back(n);
  if (near.size() != 1) near = nearest_names(text, valid, 1);
  throw ConfigError(key_path + ": '" + text + "' is not one of " + list +
                    (near.empty() ? "" : "; did you mean '" + near[0] + "'?"));
}

template <class E>
std::vector<std::string> enum_names() {
  std::vector<std::string> names;
  for (const auto& [v, name] : Names<E>::table) names.emplace_back(name);
  return names;
}

#define QFORGE_ENUM_INSTANTIATE(E)                                        \
  template const char* to_string<E>(E);                                   \
  template E enum_from_string<E>(const std::string&, const std::string&); \
  template std::vector<std::string> enum_names<E>();
QFORGE_ENUM_INSTANTIATE(Device)
QFORGE_ENUM_INSTANTIATE(Autocast)
QFORGE_ENUM_INSTANTIATE(MatmulPrecision)
QFORGE_ENUM_INSTANTIATE(Target)
QFORGE_ENUM_INSTANTIATE(Granularity)
QFORGE_ENUM_INSTANTIATE(Observer)
QFORGE_ENUM_INSTANTIATE(WeightAlgorithm)
QFORGE_ENUM_INSTANTIATE(SmoothingMethod)
QFORGE_ENUM_INSTANTIATE(BlockOffload)
QFORGE_ENUM_INSTANTIATE(TransformOp)
QFORGE_ENUM_INSTANTIATE(DType)
QFORGE_ENUM_INSTANTIATE(Distillation)
QFORGE_ENUM_INSTANTIATE(FineTuneMethod)
QFORGE_ENUM_INSTANTIATE(PruningMethod)
QFORGE_ENUM_INSTANTIATE(ChannelImportance)
#undef QFORGE_ENUM_INSTANTIATE

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float64:
    case DType::Int64: return 8;
    case DType::Float32:
    case DType::Int32: return 4;
    case DType::Float16:
    case DType::BFloat16:
    case DType::Int16: return 2;
    case DType::Int8:
    case DType::UInt8:
    case DType::Bool: return 1;
  }
  return 0;
}

}  // namespace qforge
