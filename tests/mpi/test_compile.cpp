// qforge::compile end to end on every rank count the suite runs (1, 2, 3):
// a torchvision ResNet-18 calibrated, quantized, evaluated and written; the
// saved model runs in Python's torch like the in-process one; the C++ API's
// callbacks and input-module handling.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "../unit/test_helpers.h"
#include "qforge/compile.h"
#include "qforge/deployment.h"
#include "qforge/runtime.h"

using namespace qforge;
using qforge::test::asset;
using qforge::test::ramp;

namespace {

ExperimentConfig resnet_config(const std::string& name) {
  ExperimentConfig c;
  c.model.path = asset("resnet18_traced.pt");
  c.out_dir = ::testing::TempDir() + "/qforge_compile_" + name + "_" + std::to_string(Runtime::get().size());
  CalibrationSettings data;
  data.files = {asset("images.h5")};
  data.batch_size = 4;
  c.calibration_inputs = data;
  c.evaluation_inputs = data;
  c.deployment_settings = DeploymentSettings{Target::TensorRT};
  c.quantization_settings = preset_quantization_settings(Target::TensorRT);
  c.compile_options.sensitivity_samples = 8;
  c.validate();
  return c;
}

}  // namespace

TEST(Compile, ResnetCompiledModelRunsInPythonAsInProcess) {
  auto config = resnet_config("resnet");
  config.compile_options.sensitivity = true;
  const CompileResult result = compile(config);

  ASSERT_EQ(result.layers.size(), 21u);
  for (const auto& l : result.layers) {
    EXPECT_TRUE(l.quantized) << l.plan.layer.name << ": " << l.reason;
    ASSERT_TRUE(l.weight && l.input) << l.plan.layer.name;
    EXPECT_EQ(l.input->qparams.zero_point.item<int>(), 0) << "TensorRT: symmetric activations";
    ASSERT_TRUE(l.sensitivity.has_value());
    EXPECT_GT(*l.sensitivity, 0.0) << l.plan.layer.name;
    EXPECT_LT(*l.sensitivity, 0.5) << l.plan.layer.name;
  }
  EXPECT_EQ(result.folded_batch_norms.size(), 20u);  // every convolution of ResNet-18 has its batch norm
  ASSERT_TRUE(result.evaluation.has_value());
  EXPECT_EQ(result.evaluation->rows, 37);
  EXPECT_EQ(result.evaluation->labelled, 37);
  EXPECT_GT(result.evaluation->output_sqnr_db, 15.0);
  EXPECT_LT(result.deployed_bytes, result.float_bytes / 3);  // int8 weights

  // The compiled model is plain TorchScript: standard ATen ops only.
  auto model = result.model;
  const std::string graph = model.get_method("forward").graph()->toString();
  EXPECT_EQ(graph.find("qforge::"), std::string::npos);
  EXPECT_NE(graph.find("aten::fake_quantize_per_channel_affine"), std::string::npos);
  const auto x = ramp({2, 3, 32, 32});
  const auto y = model.forward({x}).toTensor().contiguous();

  if (!Runtime::get().is_root()) return;
  for (const char* name : {"model.qforge.pt", "quant_params.json", "report.json", "summary.txt", "config.yaml"})
    EXPECT_TRUE(std::filesystem::exists(config.out_dir + "/" + name)) << name;
  std::ofstream(config.out_dir + "/expected.bin", std::ios::binary)
      .write(static_cast<const char*>(y.data_ptr()), static_cast<std::streamsize>(y.nbytes()));
  const std::string script =
      "import torch; m = torch.jit.load('" + config.out_dir +
      "/model.qforge.pt'); "
      "x = torch.linspace(-2, 2, 2*3*32*32).reshape(2, 3, 32, 32); y = m(x).detach().reshape(-1); "
      "e = torch.frombuffer(bytearray(open('" +
      config.out_dir +
      "/expected.bin', 'rb').read()), dtype=torch.float32); "
      "r = ((y - e).norm() / e.norm()).item(); print('relative difference', r); assert r < 1e-3, r";
  const std::string command = qforge::test::python() + " -c \"" + script + "\"";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

TEST(Compile, CallbacksReplaceBindingAndTransform) {
  auto config = resnet_config("callbacks");
  config.evaluation_inputs.reset();
  int64_t forwarded = 0, transformed = 0;
  CompileCallbacks callbacks;
  callbacks.data_transform = [&](Batch& batch, const DatasetInfo&) {
    batch.inputs[0] = batch.inputs[0] * 0.5;
    ++transformed;
  };
  callbacks.forward = [&](torch::jit::Module& module, const Batch& batch) {
    ++forwarded;
    return module.forward({batch.inputs[0]});
  };
  const auto result = compile(config, callbacks);
  EXPECT_GT(transformed, 0);
  EXPECT_GT(forwarded, 0);
  EXPECT_EQ(result.layers.size(), 21u);
}

// Steps of all 37 rows: every step after the first sees the same micro-batches.
TEST(Compile, TeacherOutputsAreKeptAcrossEpochsButNotWithCallbacks) {
  auto config = resnet_config("teacher");
  config.evaluation_inputs.reset();
  auto& tune = config.compile_options.fine_tune;
  tune.enabled = true;
  tune.steps = 2;
  tune.batch_size = 37;
  tune.warmup_steps = 0;
  const auto kept = compile(config);
  ASSERT_TRUE(kept.fine_tune.has_value());
  EXPECT_GT(kept.fine_tune->teacher_outputs_reused, 0);
  config.out_dir += "_callbacks";
  CompileCallbacks callbacks;  // it might draw at random: nothing is kept
  callbacks.forward = [](torch::jit::Module& module, const Batch& batch) { return module.forward({batch.inputs[0]}); };
  const auto computed = compile(config, callbacks);
  ASSERT_TRUE(computed.fine_tune.has_value());
  EXPECT_EQ(computed.fine_tune->teacher_outputs_reused, 0);
}

TEST(Compile, InputModuleKeptUnlessDiscarded) {
  auto config = resnet_config("input");
  config.evaluation_inputs.reset();
  config.discard_input_model = false;
  torch::jit::Module input = torch::jit::load(asset("resnet18_traced.pt"));
  input.eval();
  const auto x = ramp({1, 3, 32, 32});
  const auto before = input.forward({x}).toTensor();
  const auto weight = input.attr("conv1").toModule().attr("weight").toTensor().clone();
  const auto result = compile(config, {}, &input);
  EXPECT_TRUE(torch::equal(input.attr("conv1").toModule().attr("weight").toTensor(), weight));
  EXPECT_TRUE(torch::equal(input.forward({x}).toTensor(), before));
  EXPECT_EQ(result.layers.size(), 21u);
}

TEST(Compile, DisableWritesTheModelUnchanged) {
  auto config = resnet_config("disabled");
  config.disable = true;
  const auto result = compile(config);
  EXPECT_TRUE(result.disabled);
  EXPECT_TRUE(result.layers.empty());
  torch::jit::Module original = torch::jit::load(asset("resnet18_traced.pt"));
  original.eval();
  auto compiled = result.model;
  const auto x = ramp({1, 3, 32, 32});
  EXPECT_TRUE(torch::equal(compiled.forward({x}).toTensor(), original.forward({x}).toTensor()));
}

// A block's first convolution and its downsample read one tensor, observed
// once: the downsample takes the first's statistics (same observer) or
// observes the same tensor with its own (min/max here). Each gets the range
// it gets when it is the only quantized layer, bit for bit.
TEST(Compile, LayersReadingOneTensorGetTheRangesTheyGetAlone) {
  LayerQuantizationSettings minmax, skip, keep;
  minmax.activations.observer = Observer::MinMax;
  skip.skip = true;
  const auto range_of = [](const CompileResult& result, const std::string& layer) {
    for (const auto& l : result.layers)
      if (l.plan.layer.name == layer && l.input) return std::make_pair(l.input->lo, l.input->hi);
    ADD_FAILURE() << layer << " has no input range";
    return std::make_pair(0.0, 0.0);
  };
  auto together = resnet_config("shared_input");
  together.evaluation_inputs.reset();
  together.layer_quantization_settings["layer3.0.downsample.0"] = minmax;
  const CompileResult all = compile(together);
  for (const std::string layer :
       {"layer2.0.conv1", "layer2.0.downsample.0", "layer3.0.conv1", "layer3.0.downsample.0"}) {
    auto config = resnet_config("alone");
    config.evaluation_inputs.reset();
    config.layer_quantization_settings["*"] = skip;
    config.layer_quantization_settings[layer] = layer == "layer3.0.downsample.0" ? minmax : keep;
    const CompileResult alone = compile(config);
    EXPECT_EQ(range_of(all, layer), range_of(alone, layer)) << layer;
  }
  EXPECT_NE(range_of(all, "layer3.0.conv1"), range_of(all, "layer3.0.downsample.0"));  // not one observer's range
}
