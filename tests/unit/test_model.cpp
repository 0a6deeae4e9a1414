#include <torch/torch.h>

#include "data/dataset.h"
#include "data/sample_reader.h"
#include "graph/model.h"
#include "qforge/errors.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;
using qforge::test::expect_error;

TEST(Model, TorchvisionResnet18LayersAreFoundByClass) {
  auto model = Model::load(asset("resnet18_traced.pt"));
  const auto layers = model.layers();
  int conv = 0, linear = 0, quantizable = 0;
  for (const auto& l : layers) {
    conv += l.type == "Conv2d";
    linear += l.type == "Linear";
    quantizable += l.quantizable;
  }
  EXPECT_EQ(conv, 20);  // 17 3x3/7x7 convolutions + 3 downsample 1x1
  EXPECT_EQ(linear, 1);
  EXPECT_EQ(quantizable, 21);
  EXPECT_EQ(model.parameter_count(), 11181642);  // torchvision resnet18 with 10 classes
  const auto fc = std::find_if(layers.begin(), layers.end(), [](const LayerInfo& l) { return l.name == "fc"; });
  ASSERT_NE(fc, layers.end());
  EXPECT_EQ(fc->weight_shape, (std::vector<int64_t>{10, 512}));
  const auto bn =
      std::find_if(layers.begin(), layers.end(), [](const LayerInfo& l) { return l.name == "layer1.0.bn1"; });
  ASSERT_NE(bn, layers.end());
  EXPECT_FALSE(bn->quantizable);
  EXPECT_NE(bn->reason.find("normalization"), std::string::npos);
}

TEST(Model, ScriptedMobilenetSharedClassTypes) {
  auto model = Model::load(asset("mobilenet_v2_scripted.pt"));
  int quantizable = 0;
  for (const auto& l : model.layers()) quantizable += l.quantizable;
  EXPECT_EQ(quantizable, 53);  // 52 convolutions + the classifier
}

TEST(Model, ShortTypeNameDropsModulePathAndMangling) {
  EXPECT_EQ(short_type_name("__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d"), "Conv2d");
  EXPECT_EQ(short_type_name("__torch__.torch.nn.modules.linear.Linear"), "Linear");
  EXPECT_TRUE(is_quantizable_type("ConvTranspose2d"));
  EXPECT_FALSE(is_quantizable_type("BatchNorm2d"));
}

TEST(Model, SignatureAndMissingMethod) {
  auto model = Model::load(asset("kwargs_model.pt"));
  const auto sig = model.signature();
  ASSERT_EQ(sig.arguments.size(), 3u);
  EXPECT_EQ(sig.arguments[1].name, "scale");
  EXPECT_TRUE(sig.arguments[1].has_default);
  expect_error<ModelError>([] { Model::load(asset("kwargs_model.pt"), "infer"); }, {"no method 'infer'", "forward"});
  expect_error<ModelError>([] { Model::load(asset("not_a_model.pt")); }, {"not_a_model.pt", "TorchScript"});
  expect_error<ModelError>([] { Model::load(asset("absent.pt")); }, {"absent.pt", "no such model file"});
}

TEST(Model, BindsTupleDictAndKeywordSamples) {
  auto tuple_model = Model::load(asset("tuple_model.pt"));
  auto dict_model = Model::load(asset("dict_model.pt"));
  const auto tuple_data = inspect_dataset({asset("text_tuple.h5")});
  const auto dict_data = inspect_dataset({asset("text_dict.h5")});
  EXPECT_EQ(tuple_model.bind(tuple_data, {}).mode, CallBinding::Mode::Positional);
  EXPECT_EQ(dict_model.bind(dict_data, {}).mode, CallBinding::Mode::DictArgument);
  // dict_model wraps tuple_model's weights: both bindings must give the same outputs.
  const auto dict_batch = read_all(dict_data, {17, 21}, 4)[0];
  const auto tuple_batch = read_all(tuple_data, {17, 21}, 4)[0];
  const auto via_dict = dict_model.run(dict_model.bind(dict_data, {}), dict_batch).toTensor();
  const auto via_tuple = tuple_model.run(tuple_model.bind(tuple_data, {}), tuple_batch).toTensor();
  EXPECT_EQ(via_dict.sizes(), (c10::IntArrayRef{4, 4}));
  EXPECT_TRUE(torch::allclose(via_dict, via_tuple));
  expect_error<ModelError>([&] { tuple_model.bind(dict_data, {}); }, {"'input_ids' is not an argument"});
}

TEST(Model, StaticKwargsAreTypedAndChangeTheResult) {
  auto model = Model::load(asset("kwargs_model.pt"));
  const auto data = inspect_dataset({asset("vectors.h5")});
  const auto batch = read_all(data, {0, 10}, 10)[0];
  const auto plain = model.run(model.bind(data, {}), batch).toTensor();
  const auto scaled = model.run(model.bind(data, {{"scale", "2.0"}}), batch).toTensor();
  EXPECT_TRUE(torch::allclose(scaled, plain * 2));
  const auto relu = model.run(model.bind(data, {{"use_relu", "true"}}), batch).toTensor();
  EXPECT_TRUE(torch::allclose(relu, plain.relu()));
  expect_error<ModelError>([&] { model.bind(data, {{"scale", "big"}}); }, {"forward.kwargs.scale", "'big'", "float"});
  expect_error<ModelError>([&] { model.bind(data, {{"offset", "6"}}); }, {"'offset'", "not an argument"});
}

TEST(Model, RunFailureNamesTheSample) {
  auto model = Model::load(asset("kwargs_model.pt"));  // expects 8 features
  const auto data = inspect_dataset({asset("images.h5")});
  const auto batch = read_all(data, {23, 25}, 2)[0];
  expect_error<ModelError>([&] { model.run(model.bind(data, {}), batch); },
                           {"forward failed on sample 23", "x [2, 3, 40, 40]"});
}
