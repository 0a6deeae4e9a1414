// The ops language models build positions and masks with: running sums and
// differences (cumsum, diff), reads along an axis (gather, advanced indexing
// with several index tensors broadcast together) and repeat_interleave
// (grouped-query attention's keys and values).
#include <ATen/ATen.h>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

// cumsum(x, dim, dtype): CumSum in the result's dtype (a bool mask sums as int64).
void cumsum(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), std::max<int64_t>(cx.rank(n->input(0)), 1));
  cx.set(n->output(0), cx.b.node1("CumSum", {cx.tensor(n->input(0), dt), cx.b.scalar_int64(axis)}, {}, cx.stem(n)));
}

// diff(x, n, dim, prepend, append): x[1:] - x[:-1] along dim, n times, over
// prepend ++ x ++ append (a bool tensor's difference is "not equal").
void diff(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t times = cx.static_int(n->input(1), "n");
  const int64_t rank = cx.rank(n->input(0));
  const int64_t axis = normalized_axis(cx.static_int(n->input(2), "dim"), rank);
  std::vector<std::string> parts;
  if (!cx.is_none(n->input(3))) parts.push_back(cx.tensor(n->input(3), dt));
  parts.push_back(cx.tensor(n->input(0), dt));
  if (!cx.is_none(n->input(4))) parts.push_back(cx.tensor(n->input(4), dt));
  std::string x = parts.size() == 1 ? parts[0] : cx.b.node1("Concat", parts, {{"axis", axis}});
  const std::string axes = cx.b.int64s({axis});
  const auto part = [&](int64_t begin, int64_t end) {
    return cx.b.node1("Slice", {x, cx.b.int64s({begin}), cx.b.int64s({end}), axes});
  };
  constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
  for (int64_t i = 0; i < times; ++i)
    x = dt == at::kBool ? cx.b.node1("Xor", {part(1, kEnd), part(0, -1)})
                        : cx.b.node1("Sub", {part(1, kEnd), part(0, -1)});
  cx.set(n->output(0), x);
}

// gather(x, dim, index): GatherElements.
void gather(Converter& cx, const Node* n) {
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), cx.rank(n->input(0)));
  cx.set(n->output(0), cx.b.node1("GatherElements", {cx.tensor(n->input(0)), cx.tensor(n->input(2), at::kLong)},
                                  {{"axis", axis}}, cx.stem(n)));
}

// The int64 index tensors of x[i0, i1, ...] (None for a dim taken whole) and
// the dim the first one reads.
struct Indices {
  std::vector<std::string> names;
  int64_t first = -1;
};

Indices index_tensors(Converter& cx, const Node* n) {
  const Val& list = cx.val(n->input(1));
  const auto& examples = cx.example(n->input(1)).toListRef();
  Indices out;
  bool after = false;  // a None after the indices
  for (size_t d = 0; d < examples.size(); ++d) {
    const auto& e = examples[d];
    if (e.isNone()) {
      after = out.first >= 0;
      continue;
    }
    if (e.toTensor().scalar_type() == at::kBool)
      cx.fail(n, "indexing with a boolean mask gives a shape that depends on the values; use torch.where instead");
    if (after) cx.fail(n, "index tensors separated by a full slice (x[i, :, j]) have no ONNX form here");
    if (out.first < 0) out.first = static_cast<int64_t>(d);
    const bool runtime = !list.items.empty() && list.items.at(d).runtime();
    out.names.push_back(runtime ? cx.cast(list.items.at(d).name, e.toTensor().scalar_type(), at::kLong)
                                : cx.constant(e.toTensor().to(at::kLong), "index"));
  }
  if (out.names.empty()) cx.fail(n, "indexing without an index tensor");
  return out;
}

// x[..., i, j, ...] with integer index tensors on consecutive dims: one index
// is a Gather on its dim; several are broadcast against each other, stacked
// along a last axis and read with GatherND from x with those dims moved first.
void index(Converter& cx, const Node* n) {
  const Indices idx = index_tensors(cx, n);
  const std::string x = cx.tensor(n->input(0));
  if (idx.names.size() == 1)
    return cx.set(n->output(0), cx.b.node1("Gather", {x, idx.names[0]}, {{"axis", idx.first}}, cx.stem(n)));
  const int64_t rank = cx.rank(n->input(0));
  const auto k = static_cast<int64_t>(idx.names.size());
  // the common shape of the indices: that of their sum (Add: ONNX's Sum takes no integers)
  std::string sum = idx.names[0];
  for (size_t i = 1; i < idx.names.size(); ++i) sum = cx.b.node1("Add", {sum, idx.names[i]});
  const std::string common = cx.shape_of(sum);
  std::vector<std::string> stacked;
  for (const auto& i : idx.names) stacked.push_back(unsqueeze(cx, cx.b.node1("Expand", {i, common}), {-1}));
  const std::string nd = cx.b.node1("Concat", stacked, {{"axis", int64_t{-1}}});
  std::string data = x;
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < k; ++d) perm.push_back(idx.first + d);
  for (int64_t d = 0; d < rank; ++d)
    if (d < idx.first || d >= idx.first + k) perm.push_back(d);
  if (idx.first > 0) data = cx.b.node1("Transpose", {x}, {{"perm", perm}});
  std::string y = cx.b.node1("GatherND", {data, nd}, {}, cx.stem(n));
  if (idx.first > 0) {  // the dims before the indices go back in front: [before..., index dims..., after...]
    const int64_t index_rank = cx.result().toTensor().dim() - (rank - k);
    std::vector<int64_t> back;
    for (int64_t d = 0; d < idx.first; ++d) back.push_back(index_rank + d);
    for (int64_t d = 0; d < index_rank; ++d) back.push_back(d);
    for (int64_t d = index_rank + idx.first; d < index_rank + rank - k; ++d) back.push_back(d);
    y = cx.b.node1("Transpose", {y}, {{"perm", back}});
  }
  cx.set(n->output(0), y);
}

// repeat_interleave(x, repeats, dim): each slice along dim repeated `repeats`
// times in place.
void repeat_interleave_op(Converter& cx, const Node* n) {
  if (!cx.example(n->input(0)).isTensor() || n->inputs().size() < 3)
    cx.fail(n, "repeat_interleave of a repeats tensor alone");
  if (!cx.is_static(n->input(1))) cx.fail(n, "repeats must not depend on the inputs");
  int64_t repeats = 0;
  const auto& r = cx.example(n->input(1));
  if (r.isInt()) {
    repeats = r.toInt();
  } else {
    const at::Tensor t = r.toTensor();
    if (t.numel() != 1) cx.fail(n, "repeats that differ from slice to slice have no ONNX form here");
    repeats = t.item<int64_t>();
  }
  std::string x = cx.tensor(n->input(0));
  if (cx.is_none(n->input(2)))  // over the flattened tensor
    return cx.set(n->output(0), repeat_interleave(cx, cx.b.node1("Reshape", {x, cx.b.int64s({-1})}), 1, 0, repeats));
  const int64_t rank = cx.rank(n->input(0));
  const int64_t axis = normalized_axis(cx.static_int(n->input(2), "dim"), rank);
  cx.set(n->output(0), repeat_interleave(cx, x, rank, axis, repeats));
}

}  // namespace

// Unsqueeze after `axis`, expand there to `repeats`, merge the two dims.
std::string repeat_interleave(Converter& cx, const std::string& x, int64_t rank, int64_t axis, int64_t repeats) {
  if (repeats == 1) return x;
  const std::string shape = cx.shape_of(x);
  std::vector<std::string> expanded{slice1d(cx, shape, 0, axis + 1), cx.b.int64s({repeats})}, merged;
  if (axis > 0) merged.push_back(slice1d(cx, shape, 0, axis));
  merged.push_back(cx.b.int64s({-1}));
  if (axis + 1 < rank) {
    expanded.push_back(slice1d(cx, shape, axis + 1, rank));
    merged.push_back(slice1d(cx, shape, axis + 1, rank));
  }
  const std::string wide =
      cx.b.node1("Expand", {unsqueeze(cx, x, {axis + 1}), cx.b.node1("Concat", expanded, {{"axis", int64_t{0}}})});
  const std::string target = merged.size() == 1 ? merged[0] : cx.b.node1("Concat", merged, {{"axis", int64_t{0}}});
  return cx.b.node1("Reshape", {wide, target});
}

void add_sequence_ops(std::map<std::string, OpHandler>& t) {
  t["aten::cumsum"] = cumsum;
  t["aten::diff"] = diff;
  t["aten::gather"] = gather;
  t["aten::index"] = index;
  t["aten::repeat_interleave"] = repeat_interleave_op;
}

}  // namespace qforge::onnx_export
