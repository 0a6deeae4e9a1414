#include <ATen/Context.h>

#include <fstream>

#include "qforge/config_yaml.h"
#include "qforge/errors.h"
#include "runtime/device.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::expect_error;

namespace {
const char* kMinimal = R"(
model: {path: m.pt}
calibration_inputs: {files: [a.h5]}
)";
}

TEST(Config, MinimalConfigTakesDefaults) {
  const auto c = parse_config(kMinimal, "x.yaml");
  EXPECT_EQ(c.model.path, "m.pt");
  EXPECT_EQ(c.model.method, "forward");
  EXPECT_EQ(c.calibration_inputs->batch_size, 8);
  EXPECT_EQ(c.effective_logs_dir(), "qforge_out/logs");
  EXPECT_FALSE(c.quantization_settings.has_value());
  EXPECT_TRUE(c.discard_input_model);
}

TEST(Config, UnknownKeyNamesNearestValidKeyAndLine) {
  expect_error<ConfigError>([] { parse_config(std::string(kMinimal) + "seeed: 3\n", "exp.yaml"); },
                            {"exp.yaml", "unknown key 'seeed'", "line 4", "did you mean 'seed'"});
  expect_error<ConfigError>(
      [] {
        parse_config(std::string(kMinimal) +
                         "deployment_settings: {target: tensorrt}\nquantization_settings:\n  weights: {bitz: 4}\n",
                     "exp.yaml");
      },
      {"unknown key 'quantization_settings.weights.bitz'", "did you mean 'quantization_settings.weights.bits'"});
}

TEST(Config, WrongTypeNamesFullKeyPath) {
  expect_error<ConfigError>(
      [] { parse_config("model: {path: m.pt}\ncalibration_inputs: {files: [a.h5], batch_size: eight}\n", "e.yaml"); },
      {"e.yaml", "calibration_inputs.batch_size", "expected an integer", "'eight'"});
  expect_error<ConfigError>([] { parse_config("model: [1, 2]\n", "e.yaml"); }, {"model", "expected a mapping"});
}

TEST(Config, EnumTypoSuggestsValidName) {
  expect_error<ConfigError>(
      [] { parse_config(std::string(kMinimal) + "deployment_settings: {target: tensorrtt}\n", "e.yaml"); },
      {"deployment_settings.target", "'tensorrtt'", "did you mean 'tensorrt'"});
}

// TF32 matrix products for the compile only: the caller's setting comes back after it.
TEST(Config, MatmulPrecisionHoldsForItsScope) {
  const auto c = parse_config(std::string(kMinimal) + "matmul_precision: high\n", "e.yaml");
  EXPECT_EQ(c.matmul_precision, MatmulPrecision::High);
  EXPECT_EQ(parse_config(kMinimal, "e.yaml").matmul_precision, MatmulPrecision::Highest);
  expect_error<ConfigError>([] { parse_config(std::string(kMinimal) + "matmul_precision: hihg\n", "e.yaml"); },
                            {"matmul_precision", "'hihg'", "did you mean 'high'"});
  auto& context = at::globalContext();
  ASSERT_EQ(context.float32MatmulPrecision(), at::Float32MatmulPrecision::HIGHEST);
  {
    MatmulPrecisionScope compile(c.matmul_precision);
    EXPECT_EQ(context.float32MatmulPrecision(), at::Float32MatmulPrecision::HIGH);
  }
  EXPECT_EQ(context.float32MatmulPrecision(), at::Float32MatmulPrecision::HIGHEST);
}

TEST(Config, SetOverridesAnyKeyIncludingLayerNamesWithDots) {
  const auto c =
      parse_config(kMinimal, "x.yaml",
                   {"calibration_inputs.batch_size=32", "seed=7", "layer_quantization_settings[layer4.*].skip=true",
                    "quantization_settings.weights.bits=4", "deployment_settings.target=libtorch",
                    "forward.kwargs.use_cache=false"});
  EXPECT_EQ(c.calibration_inputs->batch_size, 32);
  EXPECT_EQ(c.seed, 7);
  ASSERT_EQ(c.layer_quantization_settings.count("layer4.*"), 1u);
  EXPECT_TRUE(c.layer_quantization_settings.at("layer4.*").skip);
  EXPECT_EQ(c.quantization_settings->weights.bits, 4);
  EXPECT_EQ(c.deployment_settings->target, Target::LibTorch);
  EXPECT_EQ(c.forward.kwargs.at("use_cache"), "false");
}

TEST(Config, SetWithUnknownKeyOrNoValueIsAnError) {
  expect_error<ConfigError>([] { parse_config(kMinimal, "x.yaml", {"calibration_inputs.batchsize=3"}); },
                            {"calibration_inputs.batchsize", "did you mean 'calibration_inputs.batch_size'"});
  expect_error<UsageError>([] { parse_config(kMinimal, "x.yaml", {"seed"}); }, {"expected key=value"});
}

TEST(Config, ResolvedConfigRoundTrips) {
  const auto c = parse_config(std::string(kMinimal) +
                                  "deployment_settings: {target: tensorrt_llm}\n"
                                  "quantization_settings: {weights: {bits: 4, granularity: group}}\n"
                                  "data_transform: [{op: normalize, mean: [0.5], std: [0.2]}]\n"
                                  "layer_quantization_settings: {fc: {skip: true, weights: {bits: 6}}}\n",
                              "x.yaml");
  const std::string yaml = config_to_yaml(c);
  const auto again = parse_config(yaml, "resolved.yaml");
  EXPECT_EQ(config_to_yaml(again), yaml);
  EXPECT_EQ(again.quantization_settings->weights.granularity, Granularity::Group);
  EXPECT_EQ(*again.layer_quantization_settings.at("fc").weights.bits, 6);
  EXPECT_FALSE(again.layer_quantization_settings.at("fc").activations.bits.has_value());
  EXPECT_EQ(again.data_transform.at(0).op, TransformOp::Normalize);
}

TEST(Config, QuantizationNeedsTargetAndCalibrationData) {
  expect_error<ConfigError>([] { parse_config(std::string(kMinimal) + "quantization_settings: {}\n", "x.yaml"); },
                            {"deployment_settings.target"});
  expect_error<ConfigError>(
      [] {
        parse_config("model: {path: m.pt}\ndeployment_settings: {target: tensorrt}\nquantization_settings: {}\n",
                     "x.yaml");
      },
      {"calibration_inputs"});
}

TEST(Config, MixedPrecisionNeedsAGpu) {
  const std::string fine_tune = std::string(kMinimal) +
                                "deployment_settings: {target: tensorrt}\nquantization_settings: {}\n"
                                "compile_options: {fine_tune: {enabled: true}}\n";
  expect_error<ConfigError>([&] { parse_config(fine_tune + "autocast: bf16\n", "x.yaml"); },
                            {"autocast", "off with device: cpu"});
  expect_error<ConfigError>(
      [&] { parse_config(fine_tune, "x.yaml", {"compile_options.fine_tune.teacher_autocast=bf16"}); },
      {"compile_options.fine_tune.teacher_autocast", "off with device: cpu"});
  const auto on_gpu =
      parse_config(fine_tune + "device: cuda\n", "x.yaml", {"compile_options.fine_tune.teacher_autocast=fp16"});
  EXPECT_EQ(on_gpu.compile_options.fine_tune.teacher_autocast, Autocast::Float16);
}

TEST(Config, RangesAreChecked) {
  expect_error<ConfigError>(
      [] {
        parse_config(std::string(kMinimal) +
                         "deployment_settings: {target: tensorrt}\nquantization_settings: {weights: {bits: 9}}\n",
                     "x.yaml");
      },
      {"quantization_settings.weights.bits", "2 to 8"});
  expect_error<ConfigError>([] { parse_config(kMinimal, "x.yaml", {"calibration_inputs.batch_size=0"}); },
                            {"calibration_inputs.batch_size"});
  expect_error<ConfigError>([] { parse_config("calibration_inputs: {files: a.h5}\n", "x.yaml"); }, {"model.path"});
}

TEST(Config, SingleFileMayBeAScalar) {
  const auto c = parse_config("model: {path: m.pt}\ncalibration_inputs: {files: a.h5}\n", "x.yaml");
  ASSERT_EQ(c.calibration_inputs->files.size(), 1u);
  EXPECT_EQ(c.calibration_inputs->files[0], "a.h5");
}

TEST(Config, MissingFileIsAClearError) {
  expect_error<ConfigError>([] { load_config("/nonexistent/exp.yaml"); }, {"/nonexistent/exp.yaml", "cannot open"});
  expect_error<ConfigError>([] { parse_config("model: {path: [}", "broken.yaml"); }, {"broken.yaml", "not valid YAML"});
}

TEST(Config, KeyReferenceListsNestedKeysWithDefaults) {
  const auto keys = config_key_reference();
  auto find = [&](const std::string& k) {
    for (const auto& d : keys)
      if (d.key == k) return d;
    return ConfigKeyDoc{};
  };
  EXPECT_EQ(find("quantization_settings.weights.bits").default_value, "8");
  EXPECT_EQ(find("calibration_inputs.batch_size").default_value, "8");
  EXPECT_EQ(find("model.method").default_value, "forward");
  EXPECT_FALSE(find("layer_quantization_settings[<name>].skip").key.empty());
  EXPECT_FALSE(find("data_transform[].op").key.empty());
  EXPECT_FALSE(find("resources.gpus_per_node").doc.empty());
}

TEST(Config, NearestNamesRanksByEditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  const auto near = nearest_names("layer4.0.conv", {"layer1.0.conv1", "layer4.0.conv1", "fc"}, 1);
  ASSERT_EQ(near.size(), 1u);
  EXPECT_EQ(near[0], "layer4.0.conv1");
}

TEST(Config, SweepEntriesAreOverrideListsAndRoundTrip) {
  const auto c = parse_config(std::string(kMinimal) + "sweep: [seed=1, [seed=2, out_dir=b]]\n", "x.yaml");
  ASSERT_EQ(c.sweep.size(), 2u);
  EXPECT_EQ(c.sweep[0], std::vector<std::string>{"seed=1"});
  EXPECT_EQ(c.sweep[1], (std::vector<std::string>{"seed=2", "out_dir=b"}));
  EXPECT_EQ(parse_config(config_to_yaml(c), "resolved.yaml").sweep, c.sweep);
  expect_error<ConfigError>([] { parse_config(std::string(kMinimal) + "sweep: [[]]\n", "x.yaml"); },
                            {"sweep[0]", "a list of KEY=VALUE overrides"});
}

TEST(Config, SweepTaskAppliesItsOverridesAndItsOwnDirectories) {
  const std::string path = testing::TempDir() + "/sweep.yaml";
  std::ofstream(path) << kMinimal << "out_dir: out\nlogs_dir: logs\nsweep: [seed=5, [seed=6, out_dir=mine]]\n";
  const auto first = load_sweep_task(path, {"calibration_inputs.batch_size=3"}, 0);
  EXPECT_EQ(first.seed, 5);
  EXPECT_EQ(first.calibration_inputs->batch_size, 3);
  EXPECT_EQ(first.out_dir, "out/sweep-0");
  EXPECT_EQ(first.logs_dir, "logs/sweep-0");
  EXPECT_TRUE(first.sweep.empty());
  EXPECT_EQ(load_sweep_task(path, {}, 1).out_dir, "mine");  // a setting that names its directory keeps it
  expect_error<ConfigError>([&] { load_sweep_task(path, {}, 2); },
                            {"sweep.yaml", "sweep task 2 does not exist", "0..1"});
  expect_error<ConfigError>([&] { load_sweep_task(path, {"sweep=[seedd=1]"}, 0); },
                            {"sweep.yaml: sweep[0]: unknown key 'seedd'"});
}

TEST(Config, ResourcesRunOneRankPerGpu) {
  expect_error<ConfigError>(
      [] { parse_config(std::string(kMinimal) + "resources: {gpus_per_node: 4, tasks_per_node: 2}\n", "x.yaml"); },
      {"resources.tasks_per_node", "one rank per GPU"});
  expect_error<ConfigError>([] { parse_config(std::string(kMinimal) + "resources: {cpus_per_task: 0}\n", "x.yaml"); },
                            {"resources.cpus_per_task"});
}
