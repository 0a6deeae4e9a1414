#include "graph/model.h"
#include "plan/layer_selection.h"
#include "qforge/config_yaml.h"
#include "qforge/errors.h"
#include "test_helpers.h"

using namespace qforge;

namespace {

std::vector<LayerInfo> toy_layers() {
  auto layer = [](std::string name, std::string type, std::vector<int64_t> shape) {
    LayerInfo l;
    l.name = std::move(name);
    l.type = type;
    l.weight_shape = std::move(shape);
    l.quantizable = is_quantizable_type(type);
    l.linear = type == "Linear";
    return l;
  };
  return {layer("layer1", "Sequential", {}),
          layer("layer1.0.conv1", "Conv2d", {64, 64, 3, 3}),
          layer("layer4.0.conv1", "Conv2d", {512, 256, 3, 3}),
          layer("layer4.0.conv2", "Conv2d", {512, 512, 3, 3}),
          layer("fc", "Linear", {10, 512}),
          layer("head", "Linear", {10, 100})};
}

ExperimentConfig config_with(const std::string& extra) {
  return parse_config(
      "model: {path: m.pt}\ncalibration_inputs: {files: a.h5}\n"
      "deployment_settings: {target: libtorch}\nquantization_settings: {}\n" +
          extra,
      "x.yaml");
}

const LayerPlan& find(const std::vector<LayerPlan>& plans, const std::string& name) {
  for (const auto& p : plans)
    if (p.layer.name == name) return p;
  throw std::runtime_error("no plan for " + name);
}

}  // namespace

TEST(LayerSelection, GlobsCrossDotsAndParentsMatch) {
  EXPECT_TRUE(layer_matches("layer4.*", "layer4.0.conv1"));
  EXPECT_TRUE(layer_matches("layer4", "layer4.0.conv1"));  // a parent's name covers its children
  EXPECT_FALSE(layer_matches("layer4", "layer40.conv"));
  EXPECT_TRUE(layer_matches("*.conv2", "layer4.0.conv2"));
  EXPECT_FALSE(layer_matches("fc", "fc2"));
}

TEST(LayerSelection, MoreSpecificKeysOverrideFieldByField) {
  const auto config = config_with(
      "layer_quantization_settings:\n"
      "  'layer4.*': {weights: {bits: 4, observer: mse}}\n"
      "  'layer4.0.conv2': {weights: {bits: 6}}\n"
      "  fc: {skip: true}\n");
  const auto plans = plan_layers(toy_layers(), config);
  ASSERT_EQ(plans.size(), 5u);
  EXPECT_EQ(find(plans, "layer1.0.conv1").weights.bits, 8);
  EXPECT_EQ(find(plans, "layer4.0.conv1").weights.bits, 4);
  EXPECT_EQ(find(plans, "layer4.0.conv2").weights.bits, 6);
  EXPECT_EQ(find(plans, "layer4.0.conv2").weights.observer, Observer::Mse);  // inherited from the glob
  EXPECT_FALSE(find(plans, "fc").quantize);
  EXPECT_NE(find(plans, "fc").reason.find("layer_quantization_settings[fc]"), std::string::npos);
  EXPECT_TRUE(find(plans, "head").quantize);
}

TEST(LayerSelection, KeyMatchingNoLayerListsClosestNames) {
  const auto config = config_with("layer_quantization_settings: {'layer4.0.conv3': {skip: true}}\n");
  qforge::test::expect_error<ConfigError>(
      [&] { plan_layers(toy_layers(), config); },
      {"layer_quantization_settings[layer4.0.conv3]", "matches no layer", "layer4.0.conv1"});
}

TEST(LayerSelection, GroupSizeMustDivideInputsPerChannel) {
  const auto config =
      config_with("layer_quantization_settings: {head: {weights: {granularity: group, group_size: 64}}}\n");
  const auto plans = plan_layers(toy_layers(), config);
  EXPECT_FALSE(find(plans, "head").quantize);  // 100 inputs
  EXPECT_NE(find(plans, "head").reason.find("group_size 64"), std::string::npos);
}

TEST(LayerSelection, WithoutQuantizationSettingsNothingIsQuantized) {
  const auto config = parse_config("model: {path: m.pt}\n", "x.yaml");
  for (const auto& p : plan_layers(toy_layers(), config)) EXPECT_FALSE(p.quantize);
}
