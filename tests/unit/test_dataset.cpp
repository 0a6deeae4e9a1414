#include <torch/cuda.h>
#include <torch/torch.h>

#include "data/dataset.h"
#include "data/sample_reader.h"
#include "qforge/errors.h"
#include "test_helpers.h"

using namespace qforge;
using qforge::test::asset;
using qforge::test::expect_error;

TEST(Dataset, DescribesGroupsInputsAndLabels) {
  const auto info = inspect_dataset({asset("images.h5")});
  EXPECT_EQ(info.kind, InputKind::Tensor);
  EXPECT_EQ(info.input_names, (std::vector<std::string>{"x"}));
  ASSERT_EQ(info.groups.size(), 2u);
  EXPECT_EQ(info.groups[0].name, "s32");
  EXPECT_EQ(info.groups[0].rows, 23);
  EXPECT_EQ(info.groups[1].inputs[0].row_shape, (std::vector<int64_t>{3, 40, 40}));
  EXPECT_TRUE(info.groups[0].has_labels);
  EXPECT_EQ(info.total_rows(), 37);
  const auto text = inspect_dataset({asset("text_tuple.h5")});
  EXPECT_EQ(text.kind, InputKind::Tuple);
  EXPECT_EQ(text.groups[0].inputs[1].dtype, DType::UInt8);
  EXPECT_EQ(text.groups[0].inputs[0].dtype, DType::Int64);
}

TEST(Dataset, GroupFilterAndMaxRows) {
  auto info = inspect_dataset({asset("images.h5")}, {"s40"});
  ASSERT_EQ(info.groups.size(), 1u);
  EXPECT_EQ(info.total_rows(), 14);
  info = inspect_dataset({asset("images.h5")}, {}, 25);
  EXPECT_EQ(info.total_rows(), 25);
  EXPECT_EQ(info.groups[1].rows, 2);
  expect_error<DataError>([] { inspect_dataset({asset("images.h5")}, {"s64"}); }, {"'s64'"});
}

TEST(Dataset, SeveralFilesConcatenate) {
  const auto info = inspect_dataset({asset("images.h5"), asset("images.h5")});
  EXPECT_EQ(info.total_rows(), 74);
  expect_error<DataError>(
      [] {
        inspect_dataset({asset("images.h5"), asset("text_tuple.h5")});
      },
      {"text_tuple.h5", "differ"});
}

TEST(Dataset, BadFilesGiveErrorsNamingFileAndDataset) {
  expect_error<DataError>([] { inspect_dataset({asset("truncated.h5")}); }, {"truncated.h5", "truncated"});
  expect_error<DataError>([] { inspect_dataset({asset("bad_dtype.h5")}); },
                          {"bad_dtype.h5:/samples/g/x", "unsupported dtype"});
  expect_error<DataError>([] { inspect_dataset({asset("rows_disagree.h5")}); },
                          {"rows_disagree.h5:/samples/g/mask", "6 rows", "5"});
  expect_error<DataError>([] { inspect_dataset({asset("no_layout.h5")}); }, {"no_layout.h5", "qforge_format"});
  expect_error<DataError>([] { inspect_dataset({asset("missing.h5")}); }, {"missing.h5", "no such file"});
  expect_error<DataError>([] { inspect_dataset({asset("not_a_model.pt")}); }, {"not_a_model.pt", "not an HDF5 file"});
}

// Several threads read at once; batches still arrive in order, and no more
// than prefetch + 1 are held.
TEST(SampleReader, ReadsTheShardInOrderWithBoundedPrefetch) {
  const auto info = inspect_dataset({asset("images.h5")});
  // Reference: whole groups read in one go.
  const auto all = read_all(info, {0, 37}, 100);
  ASSERT_EQ(all.size(), 2u);
  for (const int readers : {1, 3}) {
    SCOPED_TRACE("readers " + std::to_string(readers));
    SampleReaderOptions options;
    options.batch_size = 4;
    options.prefetch = 2;
    options.readers = readers;
    SampleReader reader(info, {5, 30}, options);
    int64_t next = 5;
    while (auto batch = reader.next()) {
      EXPECT_EQ(batch->global_begin, next);
      const int group = next < 23 ? 0 : 1;
      EXPECT_EQ(batch->group, group);
      const int64_t local = next - (group == 0 ? 0 : 23);
      EXPECT_TRUE(torch::equal(batch->inputs[0], all[group].inputs[0].slice(0, local, local + batch->rows())));
      EXPECT_TRUE(torch::equal(batch->labels, all[group].labels.slice(0, local, local + batch->rows())));
      next += batch->rows();
    }
    EXPECT_EQ(next, 30);
    EXPECT_LE(reader.peak_buffered(), 3u);  // prefetch + the batch being read
  }
}

// On a GPU the readers copy on streams of their own: what the computing
// stream sees after next() is the data, whatever ran on the device meanwhile.
TEST(SampleReader, CopiesToTheGpuArriveWhole) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  const auto info = inspect_dataset({asset("images.h5")});
  const auto all = read_all(info, {0, 23}, 100);
  SampleReaderOptions options;
  options.batch_size = 2;
  options.prefetch = 3;
  options.cuda_device = 0;
  options.readers = 4;
  for (int pass = 0; pass < 3; ++pass) {  // reused buffers of earlier passes must not leak in
    SampleReader reader(info, {0, 23}, options);
    int64_t next = 0;
    while (auto batch = reader.next()) {
      ASSERT_TRUE(batch->inputs[0].is_cuda());
      // Work on the computing stream that would race an unfinished copy.
      const at::Tensor doubled = batch->inputs[0] * 2;
      EXPECT_TRUE(torch::equal(doubled.cpu(), all[0].inputs[0].slice(0, next, next + batch->rows()) * 2));
      next += batch->rows();
    }
    EXPECT_EQ(next, 23);
  }
}

TEST(SampleReader, NanRowIsReportedWithFileDatasetAndRow) {
  const auto info = inspect_dataset({asset("nan.h5")});
  SampleReader reader(info, {0, 10}, {4, 2, true, {}});
  expect_error<DataError>(
      [&] {
        while (reader.next()) {
        }
      },
      {"nan.h5:/samples/s32/x", "row 7", "NaN or Inf"});
  // With several threads, the batches before the bad one still arrive first.
  SampleReader parallel(info, {0, 10}, {4, 2, true, {}, -1, 3});
  ASSERT_TRUE(parallel.next().has_value());  // rows 0..3
  expect_error<DataError>([&] { parallel.next(); }, {"nan.h5:/samples/s32/x", "row 7", "NaN or Inf"});
  SampleReader unchecked(info, {0, 10}, {4, 2, false, {}});
  int64_t rows = 0;
  while (auto b = unchecked.next()) rows += b->rows();
  EXPECT_EQ(rows, 10);
}

TEST(SampleReader, StoppingEarlyDoesNotHang) {
  const auto info = inspect_dataset({asset("images.h5")});
  SampleReader reader(info, {0, 37}, {1, 1, true, {}});
  ASSERT_TRUE(reader.next().has_value());
}  // destructor joins the prefetch thread while it waits for room

TEST(Transforms, ScaleAndNormalizeMatchClosedForm) {
  const auto info = inspect_dataset({asset("images.h5")});
  auto raw = read_all(info, {0, 4}, 4);
  std::vector<TransformStep> steps(2);
  steps[0].op = TransformOp::Scale;
  steps[0].factor = 0.5;
  steps[1].op = TransformOp::Normalize;
  steps[1].mean = {1.0, 2.0, 3.0};
  steps[1].std = {2.0, 4.0, 8.0};
  auto transform = make_transform(steps, info);
  Batch batch = raw[0];
  batch.inputs[0] = batch.inputs[0].clone();
  transform(batch, info);
  const auto x = raw[0].inputs[0];
  for (int c = 0; c < 3; ++c) {
    const auto expected = (x.select(1, c) * 0.5 - steps[1].mean[c]) / steps[1].std[c];
    EXPECT_TRUE(torch::allclose(batch.inputs[0].select(1, c), expected));
  }
}

TEST(Transforms, CastAndInputSelection) {
  const auto info = inspect_dataset({asset("text_tuple.h5")});
  std::vector<TransformStep> steps(1);
  steps[0].op = TransformOp::Cast;
  steps[0].dtype = DType::Float32;
  steps[0].inputs = {"mask"};
  auto transform = make_transform(steps, info);
  auto batch = read_all(info, {0, 3}, 3)[0];
  transform(batch, info);
  EXPECT_EQ(batch.inputs[0].scalar_type(), torch::kLong);
  EXPECT_EQ(batch.inputs[1].scalar_type(), torch::kFloat);
  steps[0].inputs = {"maks"};
  expect_error<DataError>([&] { make_transform(steps, info); }, {"'maks'", "data_transform[0]"});
}

TEST(Transforms, NormalizeWithWrongChannelCountNamesTheStep) {
  const auto info = inspect_dataset({asset("images.h5")});
  std::vector<TransformStep> steps(1);
  steps[0].op = TransformOp::Normalize;
  steps[0].mean = {0.5};
  steps[0].std = {0.5};
  auto transform = make_transform(steps, info);
  auto batch = read_all(info, {0, 2}, 2)[0];
  expect_error<DataError>([&] { transform(batch, info); }, {"data_transform[0]", "input 'x'", "size 1"});
}
