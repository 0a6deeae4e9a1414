// Deployment presets: their defaults fill what the experiment leaves out,
// and settings the target cannot run are errors naming the key.
#include "plan/layer_selection.h"
#include "qforge/config_yaml.h"
#include "qforge/deployment.h"
#include "qforge/errors.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::expect_error;

namespace {

ExperimentConfig with_target(const std::string& target, const std::string& quantization = "{}",
                             const std::string& extra = "") {
  return parse_config("model: {path: m.pt}\ncalibration_inputs: {files: a.h5}\ndeployment_settings: {target: " +
                          target + "}\nquantization_settings: " + quantization + "\n" + extra,
                      "exp.yaml");
}

}  // namespace

TEST(Deployment, PresetsFillUnsetKeys) {
  const auto trt = with_target("tensorrt").quantization_settings;
  EXPECT_TRUE(trt->activations.symmetric && trt->activations.is_signed);
  EXPECT_EQ(trt->activations.observer, Observer::Percentile);
  EXPECT_EQ(trt->weights.granularity, Granularity::Channel);

  const auto ort = with_target("onnxruntime").quantization_settings;
  EXPECT_FALSE(ort->activations.symmetric || ort->activations.is_signed);  // uint8 asymmetric
  EXPECT_TRUE(ort->weights.symmetric && ort->weights.is_signed);

  const auto llm = with_target("tensorrt_llm").quantization_settings;
  EXPECT_EQ(llm->weights.bits, 4);
  EXPECT_EQ(llm->weights.granularity, Granularity::Group);
  EXPECT_EQ(llm->weights.group_size, 128);
  EXPECT_FALSE(llm->activations.enabled);

  // A key the experiment sets wins over the preset; the rest stays the preset's.
  const auto mixed = with_target("tensorrt", "{activations: {observer: entropy}}").quantization_settings;
  EXPECT_EQ(mixed->activations.observer, Observer::Entropy);
  EXPECT_TRUE(mixed->activations.symmetric);
}

TEST(Deployment, ContradictionsNameTheKeyAndTheTarget) {
  expect_error<ConfigError>([] { with_target("tensorrt", "{weights: {bits: 4}}"); },
                            {"exp.yaml", "quantization_settings.weights.bits", "tensorrt runs int8 weights",
                             "4-bit weights in groups deploy with target tensorrt_llm"});
  expect_error<ConfigError>([] { with_target("tensorrt", "{activations: {symmetric: false}}"); },
                            {"quantization_settings.activations.symmetric", "signed symmetric activations"});
  expect_error<ConfigError>([] { with_target("onnxruntime", "{weights: {granularity: group}}"); },
                            {"quantization_settings.weights.granularity"});
  expect_error<ConfigError>([] { with_target("tensorrt_llm", "{activations: {enabled: true}}"); },
                            {"quantization_settings.activations.enabled", "weight-only"});
  expect_error<ConfigError>([] { with_target("tensorrt_llm", "{weights: {group_size: 32}}"); },
                            {"quantization_settings.weights.group_size", "groups of 64 or 128"});
  // libtorch runs any scheme.
  EXPECT_EQ(with_target("libtorch", "{weights: {bits: 3, granularity: group, group_size: 16}}")
                .quantization_settings->weights.bits,
            3);
}

TEST(Deployment, PerLayerOverridesAreCheckedAgainstTheTarget) {
  const auto config = with_target("tensorrt", "{}", "layer_quantization_settings: {'fc*': {weights: {bits: 4}}}\n");
  LayerInfo fc;
  fc.name = "fc";
  fc.type = "Linear";
  fc.quantizable = true;
  fc.weight_shape = {10, 16};
  expect_error<ConfigError>([&] { plan_layers({fc}, config); },
                            {"layer_quantization_settings[fc*].weights.bits", "tensorrt runs int8 weights"});
  // A skipped layer keeps no settings to contradict.
  const auto skipped =
      with_target("tensorrt", "{}", "layer_quantization_settings: {fc: {skip: true, weights: {bits: 4}}}\n");
  EXPECT_FALSE(plan_layers({fc}, skipped).at(0).quantize);
}
