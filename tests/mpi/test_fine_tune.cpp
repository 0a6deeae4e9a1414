// QA-LoRA fine-tuning: the merge lands on the grid and the compiled model
// equals the fine-tuned one; every rank holds the same adapters after every
// step, equal (to float tolerance) to one process taking the whole global batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "../unit/test_helpers.h"
#include "data/batches.h"
#include "finetune/fine_tune.h"
#include "graph/model.h"
#include "qforge/compile.h"
#include "qforge/errors.h"
#include "qforge/runtime.h"
#include "runtime/communicator.h"

using namespace qforge;
using qforge::test::asset;

namespace {

struct Setup {
  Model model;
  DatasetInfo data;
  CallBinding binding;
  std::vector<FineTuneTarget> targets;
  ForwardFn run;
};

// The model with every quantizable layer at 4-bit weights per channel and
// 8-bit inputs on a fixed range: the starting point fine-tuning improves.
Setup make_setup(const std::string& model_file, const std::string& data_file) {
  Setup s{Model::load(asset(model_file)), inspect_dataset({asset(data_file)}), {}, {}, {}};
  s.model.module().eval();
  s.binding = s.model.bind(s.data, {});
  TensorQuantSettings w;
  w.bits = 4;
  w.granularity = Granularity::Channel;
  for (const auto& layer : s.model.layers()) {
    if (!layer.quantizable) continue;
    FineTuneTarget t;
    t.weight = s.model.submodule(layer.name).attr("weight").toTensor().detach();
    t.weights = w;
    t.quant.layer = layer.name;
    t.quant.weight = observe_weight(t.weight, w);
    t.quant.weight_range = quant_range(4, true);
    if (layer.type != "Embedding") {
      t.quant.input_range = quant_range(8, true);
      t.quant.input = qparams_from_range(torch::tensor({-8.0}, torch::kDouble), torch::tensor({8.0}, torch::kDouble),
                                         t.quant.input_range, true);
    }
    s.targets.push_back(t);
  }
  s.run = [binding = s.binding, path = s.model.path()](torch::jit::Module& m, const Batch& b) {
    return run_module(m, "forward", binding, b, path);
  };
  return s;
}

// Rank 0 empties `dir` while the others wait: removing it from every rank at
// once races (one rank's remove_all throws, and that rank leaves the others
// behind in the next collective).
void fresh_directory(const std::string& dir) {
  if (Runtime::get().is_root()) std::filesystem::remove_all(dir);
  Runtime::get().barrier();
}

// fine_tune over the setup's targets and data.
FineTuneReport tune(const Setup& s, const FineTuneSettings& f, int64_t seed, Communicator* comm,
                    const CheckpointPlan& checkpoints = {}, const FineTuneHooks& hooks = {}) {
  FineTuneOptions o;
  o.targets = s.targets;
  o.settings = f;
  o.seed = seed;
  o.data = s.data;
  o.run = s.run;
  o.checkpoints = checkpoints;
  return fine_tune(s.model.module(), o, comm, Runtime::get(), hooks);
}

FineTuneSettings settings(int64_t steps) {
  FineTuneSettings f;
  f.enabled = true;
  f.steps = steps;
  f.batch_size = 8;
  f.accumulation_steps = 2;
  f.learning_rate = 5e-3;
  f.warmup_steps = 1;
  f.lora_rank = 4;
  f.log_every = 100;
  return f;
}

}  // namespace

TEST(FineTune, MergeLandsOnTheGridAndCompiledEqualsFineTuned) {
  auto s = make_setup("resnet18_traced.pt", "images.h5");
  auto comm = make_mpi_communicator();
  const auto before = s.model.submodule("layer1.0.conv1").attr("weight").toTensor().clone();
  const auto report = tune(s, settings(3), 0, comm.get());
  ASSERT_EQ(report.loss.size(), 3u);
  EXPECT_TRUE(torch::equal(s.model.submodule("layer1.0.conv1").attr("weight").toTensor(), before))
      << "the frozen weights do not move";

  std::vector<LayerFakeQuant> student_layers, compiled_layers;
  torch::jit::Module merged = s.model.module().clone();
  for (const auto& t : s.targets) {
    const auto& w = report.merged.weights.at(t.quant.layer);
    EXPECT_TRUE(torch::equal(fake_quantize_weight(w, *t.quant.weight, t.weights), w))
        << t.quant.layer << ": re-quantizing the merged weight changes it";
    EXPECT_GT(report.merged.adapters.at(t.quant.layer).b.abs().max().item<double>(), 0)
        << t.quant.layer << " learned nothing";
    student_layers.push_back(t.quant);
    student_layers.back().lora = report.merged.adapters.at(t.quant.layer);
    compiled_layers.push_back(t.quant);
    submodule(merged, t.quant.layer, "merged").setattr("weight", w);
  }
  auto student = with_fake_quantization(s.model.module(), "forward", student_layers);
  auto compiled = with_fake_quantization(merged, "forward", compiled_layers);
  torch::NoGradGuard no_grad;
  const auto x = qforge::test::ramp({2, 3, 32, 32});
  const auto expected = student.forward({x}).toTensor();
  const auto actual = compiled.forward({x}).toTensor();
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-5, 1e-6)) << (actual - expected).abs().max().item<double>();
}

TEST(FineTune, RanksHoldIdenticalAdaptersEqualToOneProcess) {
  auto s = make_setup("tuple_model.pt", "text_tuple.h5");
  auto comm = make_mpi_communicator();
  auto f = settings(4);
  f.task_loss_weight = 0.0;
  f.eval_every = 1;  // the hook after every step: every rank's adapters must be the same there
  int64_t steps_checked = 0, tensors_checked = 0;
  FineTuneHooks hooks;
  hooks.evaluate = [&](torch::jit::Module& student, int64_t step) {
    for (const auto& p : student.named_parameters()) {
      if (p.name.find("lora_") == std::string::npos) continue;
      ++tensors_checked;
      const auto everyone = comm->all_gather(p.value.detach().contiguous());
      for (int r = 1; r < comm->size(); ++r)
        EXPECT_TRUE(torch::equal(everyone[r], everyone[0])) << p.name << " after step " << step << ": rank " << r;
    }
    ++steps_checked;
    EvaluationResult result;
    result.rows = step;  // marks which evaluation the progress report carries
    return result;
  };
  std::vector<FineTuneProgress> reported;
  hooks.progress = [&](const FineTuneProgress& p) { reported.push_back(p); };
  const auto distributed = tune(s, f, 3, comm.get(), {}, hooks);
  EXPECT_EQ(steps_checked, f.steps);
  ASSERT_EQ(static_cast<int64_t>(reported.size()), f.steps) << "one progress report per step";
  for (int64_t i = 0; i < f.steps; ++i) {
    EXPECT_EQ(reported[i].step, i + 1);
    EXPECT_EQ(reported[i].steps, f.steps);
    EXPECT_EQ(reported[i].loss, distributed.loss[i]) << "the step's global mean loss";
    EXPECT_DOUBLE_EQ(reported[i].learning_rate, learning_rate_at(f, i));
    ASSERT_TRUE(reported[i].evaluation) << "eval_every 1: every step's report carries its evaluation";
    EXPECT_EQ(reported[i].evaluation->rows, i + 1);
  }
  EXPECT_EQ(reported.back().eta_seconds, 0.0);
  EXPECT_EQ(tensors_checked, f.steps * 2 * static_cast<int64_t>(s.targets.size())) << "A and B of every target";
  // Every rank again, alone with the whole global batch: the reference.
  const auto single = tune(s, f, 3, nullptr);
  for (const auto& [layer, adapter] : distributed.merged.adapters) {
    for (const auto& tensor : {adapter.a, adapter.b}) {
      const auto everyone = comm->all_gather(tensor.contiguous());
      for (int r = 1; r < comm->size(); ++r)
        EXPECT_TRUE(torch::equal(everyone[r], everyone[0])) << layer << ": rank " << r << " differs from rank 0";
    }
    const auto& reference = single.merged.adapters.at(layer);
    EXPECT_TRUE(torch::allclose(adapter.a, reference.a, 1e-4, 1e-6)) << layer;
    EXPECT_TRUE(torch::allclose(adapter.b, reference.b, 1e-4, 1e-6)) << layer;
  }
  for (size_t i = 0; i < distributed.loss.size(); ++i)
    EXPECT_NEAR(distributed.loss[i], single.loss[i], 1e-5 * std::abs(single.loss[i]) + 1e-9) << "step " << i;
}

TEST(FineTune, LearnedRangesAndDropoutStayIdenticalAcrossRanksAndLandOnTheLearnedGrid) {
  auto s = make_setup("tuple_model.pt", "text_tuple.h5");
  auto comm = make_mpi_communicator();
  auto f = settings(4);
  f.learn_ranges = true;
  f.lora_dropout = 0.5;
  const auto distributed = tune(s, f, 3, comm.get());
  const auto single = tune(s, f, 3, nullptr);
  ASSERT_EQ(distributed.merged.weight_scales.size(), s.targets.size()) << "every weight scale is learned";
  ASSERT_FALSE(distributed.merged.input_scales.empty()) << "input scales are learned";
  for (const auto& t : s.targets) {
    const auto& learned = distributed.merged.weight_scales.at(t.quant.layer);
    EXPECT_EQ(learned.sizes(), t.quant.weight->qparams.scale.sizes()) << t.quant.layer;
    EXPECT_FALSE(torch::equal(learned, t.quant.weight->qparams.scale)) << t.quant.layer << ": the range did not train";
    EXPECT_TRUE(torch::allclose(learned, single.merged.weight_scales.at(t.quant.layer), 1e-4, 1e-9)) << t.quant.layer;
    const auto everyone = comm->all_gather(learned.to(torch::kDouble).contiguous());
    for (int r = 1; r < comm->size(); ++r)
      EXPECT_TRUE(torch::equal(everyone[r], everyone[0])) << t.quant.layer << ": rank " << r << " differs";
    // The merged weight is on the learned grid.
    WeightQuant grid = *t.quant.weight;
    grid.qparams.scale = learned;
    const auto& merged = distributed.merged.weights.at(t.quant.layer);
    EXPECT_TRUE(torch::equal(fake_quantize_weight(merged, grid, t.weights), merged)) << t.quant.layer;
  }
  for (const auto& [layer, adapter] : distributed.merged.adapters) {  // dropout masks agree across ranks
    const auto everyone = comm->all_gather(adapter.b.contiguous());
    for (int r = 1; r < comm->size(); ++r) EXPECT_TRUE(torch::equal(everyone[r], everyone[0])) << layer;
    EXPECT_TRUE(torch::allclose(adapter.b, single.merged.adapters.at(layer).b, 1e-4, 1e-6)) << layer;
  }
}

TEST(FineTune, TeacherOutputsFromAnEarlierEpochChangeNothing) {
  auto s = make_setup("tuple_model.pt", "text_tuple.h5");
  auto comm = make_mpi_communicator();
  auto f = settings(5);
  f.batch_size = 13;      // the 26 rows are two steps: steps 3 to 5 see them again
  f.lora_dropout = 0.25;  // the student changes every step; the teacher does not
  f.teacher_cache_mb = 0;
  const auto computed = tune(s, f, 3, comm.get());
  f.teacher_cache_mb = 16;
  const auto kept = tune(s, f, 3, comm.get());
  EXPECT_EQ(computed.teacher_outputs_reused, 0);
  EXPECT_GT(kept.teacher_outputs_reused, 0);
  EXPECT_EQ(kept.loss, computed.loss);
  for (const auto& [layer, adapter] : computed.merged.adapters) {
    EXPECT_TRUE(torch::equal(kept.merged.adapters.at(layer).a, adapter.a)) << layer;
    EXPECT_TRUE(torch::equal(kept.merged.adapters.at(layer).b, adapter.b)) << layer;
  }
}

TEST(FineTune, PlainLoraTrainsOnFloatWeights) {
  auto s = make_setup("tuple_model.pt", "text_tuple.h5");
  auto comm = make_mpi_communicator();
  auto f = settings(3);
  f.method = FineTuneMethod::Lora;
  const auto plain = tune(s, f, 3, comm.get());
  f.method = FineTuneMethod::QaLora;
  const auto quantized = tune(s, f, 3, comm.get());
  // Without fake quantization the student starts as the float model itself
  // (B = 0): nothing to distil at step 1. Through the quantizer, there is.
  EXPECT_EQ(plain.loss[0], 0.0);
  EXPECT_GT(quantized.loss[0], 0.0);
  for (const auto& t : s.targets) {
    const auto& merged = plain.merged.weights.at(t.quant.layer);
    EXPECT_TRUE(torch::equal(merged, adapted_weight(t.weight, plain.merged.adapters.at(t.quant.layer))))
        << t.quant.layer << ": lora hands back W + s·B·A in float";
  }
}

TEST(FineTune, LearningRateWarmsUpThenDecaysToZero) {
  auto f = settings(10);
  f.warmup_steps = 2;
  EXPECT_DOUBLE_EQ(learning_rate_at(f, 0), f.learning_rate / 2);
  EXPECT_DOUBLE_EQ(learning_rate_at(f, 1), f.learning_rate);
  EXPECT_DOUBLE_EQ(learning_rate_at(f, 2), f.learning_rate);
  EXPECT_NEAR(learning_rate_at(f, 9), f.learning_rate * 0.5 * (1 + std::cos(M_PI * 7.0 / 8.0)), 1e-15);
}

TEST(FineTune, StoppedAndResumedEqualsUninterruptedBitwise) {
  auto s = make_setup("tuple_model.pt", "text_tuple.h5");
  auto comm = make_mpi_communicator();
  auto f = settings(6);
  f.lora_dropout = 0.25;  // masks and learned ranges must resume too
  f.learn_ranges = true;
  const std::string dir = ::testing::TempDir() + "/qforge_resume_" + std::to_string(comm->size());
  fresh_directory(dir);
  const CheckpointPlan plan{dir + "/fine_tune.pt", 2, true, 0};
  const auto uninterrupted = tune(s, f, 5, comm.get());

  auto first = plan;
  first.stop_after = 3;  // stops after step 3: a checkpoint at 2 (every), then one at 3 (stopping)
  const auto stopped = tune(s, f, 5, comm.get(), first);
  EXPECT_FALSE(stopped.finished);
  const auto resumed = tune(s, f, 5, comm.get(), plan);
  EXPECT_TRUE(resumed.finished);
  EXPECT_EQ(resumed.resumed_from, 3);
  EXPECT_EQ(resumed.loss, uninterrupted.loss);
  for (const auto& [layer, adapter] : uninterrupted.merged.adapters) {
    EXPECT_TRUE(torch::equal(resumed.merged.adapters.at(layer).a, adapter.a)) << layer;
    EXPECT_TRUE(torch::equal(resumed.merged.adapters.at(layer).b, adapter.b)) << layer;
    EXPECT_TRUE(torch::equal(resumed.merged.weights.at(layer), uninterrupted.merged.weights.at(layer))) << layer;
    EXPECT_TRUE(torch::equal(resumed.merged.weight_scales.at(layer), uninterrupted.merged.weight_scales.at(layer)))
        << layer;
  }
}

TEST(FineTune, BadCheckpointsAreRefusedClearly) {
  auto s = make_setup("tuple_model.pt", "text_tuple.h5");
  auto comm = make_mpi_communicator();
  const std::string dir = ::testing::TempDir() + "/qforge_badckpt_" + std::to_string(comm->size());
  fresh_directory(dir);
  auto f = settings(4);
  CheckpointPlan plan{dir + "/fine_tune.pt", 0, true, 2};
  tune(s, f, 5, comm.get(), plan);
  plan.stop_after = 0;
  // Other settings: the checkpoint belongs to another run (ConfigError, exit 3
  // on every rank; with one rank the message itself arrives).
  auto other = settings(4);
  other.lora_rank = 2;
  const auto refused = [&](const FineTuneSettings& run_settings, int code, const std::string& fragment) {
    try {
      tune(s, run_settings, 5, comm.get(), plan);
      ADD_FAILURE() << "the checkpoint was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.exit_code(), code) << e.what();
      if (comm->size() == 1) EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  refused(other, kExitConfig, "belongs to another model or other fine-tuning settings");
  Runtime::get().barrier();
  if (Runtime::get().is_root()) std::filesystem::resize_file(plan.path, std::filesystem::file_size(plan.path) / 2);
  Runtime::get().barrier();
  refused(f, kExitData, "fine-tuning checkpoint");
}
