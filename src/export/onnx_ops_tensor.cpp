// Shapes, views, indexing, joining and splitting, and the structural prim ops
// (lists, tuples, dicts) over values computed at run time.
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

Val runtime_items(Converter& cx, const Node* n) {
  Val v;
  for (const Value* in : n->inputs()) v.items.push_back(cx.val(in));
  return v;
}

// A list's items; a static list (folded, so without items) gives its first
// `count` example elements, each static.
std::vector<Val> items_of(const Val& list, size_t count) {
  if (!list.items.empty() || !list.example.isList()) return list.items;
  std::vector<Val> items;
  const auto elements = list.example.toListRef();
  for (size_t i = 0; i < std::min(count, elements.size()); ++i) {
    Val item;
    item.example = elements[i];
    items.push_back(item);
  }
  return items;
}

// A dict's entries: its run-time fields, and the entries of its example that
// hold no run-time value.
std::map<std::string, Val> entries_of(const Val& dict) {
  std::map<std::string, Val> entries = dict.fields;
  if (!dict.example.isGenericDict()) return entries;
  for (const auto& e : dict.example.toGenericDict())
    if (e.key().isString() && !entries.count(e.key().toStringRef())) entries[e.key().toStringRef()].example = e.value();
  return entries;
}

const std::string& string_key(Converter& cx, const Node* n, const Value* key) {
  if (!cx.example(key).isString())
    cx.fail(n, "a dict whose keys are not strings (return a tensor, a tuple or a dict of str)");
  return cx.example(key).toStringRef();
}

void dict_construct(Converter& cx, const Node* n) {
  Val dict;
  for (size_t i = 0; i + 1 < n->inputs().size(); i += 2)
    dict.fields[string_key(cx, n, n->input(i))] = cx.val(n->input(i + 1));
  cx.set(n->output(0), dict);
}

// dict[key] = value, as scripted code fills a dict of outputs.
void set_item(Converter& cx, const Node* n) {
  if (!cx.example(n->input(0)).isGenericDict()) cx.fail(n, "assigning into a list item has no ONNX form here");
  Val dict = cx.val(n->input(0));
  dict.fields = entries_of(dict);
  dict.fields[string_key(cx, n, n->input(1))] = cx.val(n->input(2));
  cx.set(n->input(0), dict);
}

// list.append(x), as scripted code builds lists: the list's value gains the item,
// so later reads of the list see it. The example list already holds it (the
// op ran on the examples before its handler).
void append(Converter& cx, const Node* n) {
  Val list = cx.val(n->input(0));
  const size_t before = list.example.isList() ? list.example.toListRef().size() - 1 : 0;
  list.items = items_of(list, before);
  list.items.push_back(cx.val(n->input(1)));
  cx.set(n->input(0), list);
  cx.set(n->output(0), list);
}

void unpack(Converter& cx, const Node* n) {
  const Val& packed = cx.val(n->input(0));
  if (packed.items.size() != n->outputs().size())
    cx.fail(n, "unpacks " + std::to_string(n->outputs().size()) + " values from a sequence of " +
                   std::to_string(packed.items.size()));
  for (size_t i = 0; i < n->outputs().size(); ++i) cx.set(n->output(i), packed.items[i]);
}

void get_item(Converter& cx, const Node* n) {
  const Val& container = cx.val(n->input(0));
  const auto& key = cx.example(n->input(1));
  if (!cx.is_static(n->input(1))) cx.fail(n, "an index computed from the inputs into a list");
  if (key.isString()) {
    const auto entries = entries_of(container);
    auto found = entries.find(key.toStringRef());
    if (found == entries.end()) cx.fail(n, "no key '" + key.toStringRef() + "' in the dict");
    return cx.set(n->output(0), found->second);
  }
  int64_t i = key.toInt();
  if (i < 0) i += static_cast<int64_t>(container.items.size());
  cx.set(n->output(0), container.items.at(i));
}

// aten::size(x, dim) / aten::size(x): Shape and Gather, or constants when
// every dimension is fixed (dynamic: false).
void size(Converter& cx, const Node* n) {
  if (!cx.options.dynamic) return cx.set(n->output(0), Val{});
  const std::string shape = cx.shape_of(cx.tensor(n->input(0)));
  const int64_t rank = cx.rank(n->input(0));
  if (n->inputs().size() > 1) {
    const int64_t d = normalized_axis(cx.static_int(n->input(1), "the dim of size()"), rank);
    return cx.set(n->output(0), cx.b.node1("Gather", {shape, cx.b.scalar_int64(d)}, {{"axis", int64_t{0}}}));
  }
  Val list;
  for (int64_t d = 0; d < rank; ++d) {
    Val item;
    item.name = cx.b.node1("Gather", {shape, cx.b.scalar_int64(d)}, {{"axis", int64_t{0}}});
    list.items.push_back(item);
  }
  cx.set(n->output(0), list);
}

// Facts that do not depend on the values: rank, dtype, device.
void static_fact(Converter& cx, const Node* n) {
  for (const Value* out : n->outputs()) cx.set(out, Val{});
}

void reshape(Converter& cx, const Node* n) {
  cx.set(n->output(0), cx.b.node1("Reshape", {cx.tensor(n->input(0)), cx.int64_list(n->input(1))}, {}, cx.stem(n)));
}

// flatten(x, start, end): Flatten when it makes [d0, rest]; otherwise a Reshape
// keeping the dims around the flattened range.
void flatten(Converter& cx, const Node* n) {
  const int64_t rank = cx.rank(n->input(0));
  const int64_t start = normalized_axis(cx.static_int(n->input(1), "start_dim"), rank);
  const int64_t end = normalized_axis(cx.static_int(n->input(2), "end_dim"), rank);
  const std::string x = cx.tensor(n->input(0));
  if (start == 1 && end == rank - 1)
    return cx.set(n->output(0), cx.b.node1("Flatten", {x}, {{"axis", int64_t{1}}}, cx.stem(n)));
  if (rank == 0 || start == end) return pass_through(cx, n);
  const std::string shape = cx.shape_of(x);
  std::vector<std::string> parts;
  if (start > 0) parts.push_back(slice1d(cx, shape, 0, start));
  parts.push_back(cx.b.int64s({-1}));
  if (end + 1 < rank) parts.push_back(slice1d(cx, shape, end + 1, rank));
  const std::string target = parts.size() == 1 ? parts[0] : cx.b.node1("Concat", parts, {{"axis", int64_t{0}}});
  cx.set(n->output(0), cx.b.node1("Reshape", {x, target}, {}, cx.stem(n)));
}

// unflatten(x, dim, sizes): the dim split into `sizes`.
void unflatten(Converter& cx, const Node* n) {
  const int64_t rank = cx.rank(n->input(0));
  const int64_t d = normalized_axis(cx.static_int(n->input(1), "dim"), rank);
  const std::string x = cx.tensor(n->input(0));
  const std::string shape = cx.shape_of(x);
  std::vector<std::string> parts;
  if (d > 0) parts.push_back(slice1d(cx, shape, 0, d));
  parts.push_back(cx.int64_list(n->input(2)));
  if (d + 1 < rank) parts.push_back(slice1d(cx, shape, d + 1, rank));
  cx.set(n->output(0), cx.b.node1("Reshape", {x, cx.b.node1("Concat", parts, {{"axis", int64_t{0}}})}, {}, cx.stem(n)));
}

void transpose_perm(Converter& cx, const Node* n, const std::vector<int64_t>& perm) {
  cx.set(n->output(0), cx.b.node1("Transpose", {cx.tensor(n->input(0))}, {{"perm", perm}}, cx.stem(n)));
}

void permute(Converter& cx, const Node* n) {
  std::vector<int64_t> perm = cx.static_ints(n->input(1), "the permutation");
  for (auto& p : perm) p = normalized_axis(p, cx.rank(n->input(0)));
  transpose_perm(cx, n, perm);
}

void transpose(Converter& cx, const Node* n) {
  const int64_t rank = cx.rank(n->input(0));
  std::vector<int64_t> perm(rank);
  for (int64_t i = 0; i < rank; ++i) perm[i] = i;
  if (rank < 2) return pass_through(cx, n);
  const int64_t a = n->inputs().size() > 1 ? normalized_axis(cx.static_int(n->input(1), "dim0"), rank) : 0;
  const int64_t c = n->inputs().size() > 1 ? normalized_axis(cx.static_int(n->input(2), "dim1"), rank) : 1;
  std::swap(perm[a], perm[c]);
  transpose_perm(cx, n, perm);
}

void unsqueeze_op(Converter& cx, const Node* n) {
  const int64_t d = normalized_axis(cx.static_int(n->input(1), "dim"), cx.rank(n->input(0)) + 1);
  cx.set(n->output(0), unsqueeze(cx, cx.tensor(n->input(0)), {d}));
}

void squeeze_op(Converter& cx, const Node* n) {
  const int64_t rank = cx.rank(n->input(0));
  std::vector<int64_t> axes;
  if (n->inputs().size() > 1) {
    for (int64_t d : cx.static_ints(n->input(1), "dim")) {
      d = normalized_axis(d, rank);
      // torch leaves a dim that is not 1 as it is; ONNX would refuse it.
      if (cx.example(n->input(0)).toTensor().size(d) == 1) axes.push_back(d);
    }
    if (axes.empty()) return pass_through(cx, n);
  } else {
    const auto sizes = cx.example(n->input(0)).toTensor().sizes();
    for (int64_t d = 0; d < rank; ++d)
      if (sizes[d] == 1) axes.push_back(d);
  }
  cx.set(n->output(0), squeeze(cx, cx.tensor(n->input(0)), axes));
}

// expand(x, sizes): -1 keeps a dim, which ONNX's broadcasting Expand does with 1.
void expand(Converter& cx, const Node* n) {
  const Val& sizes = cx.val(n->input(1));
  std::string shape;
  if (!sizes.runtime()) {
    auto s = cx.static_ints(n->input(1), "sizes");
    for (auto& d : s) d = d < 0 ? 1 : d;
    shape = cx.b.int64s(s);
  } else {
    std::vector<std::string> parts;
    for (const auto& item : sizes.items) {
      if (item.runtime())
        parts.push_back(unsqueeze(cx, cx.cast(item.name, number_dtype(item.example), at::kLong), {0}));
      else
        parts.push_back(cx.b.int64s({item.example.toInt() < 0 ? 1 : item.example.toInt()}));
    }
    shape = cx.b.node1("Concat", parts, {{"axis", int64_t{0}}});
  }
  cx.set(n->output(0), cx.b.node1("Expand", {cx.tensor(n->input(0)), shape}, {}, cx.stem(n)));
}

void expand_as(Converter& cx, const Node* n) {
  const std::string target = cx.shape_of(cx.tensor(n->input(1)));
  cx.set(n->output(0), cx.b.node1("Expand", {cx.tensor(n->input(0)), target}, {}, cx.stem(n)));
}

void repeat(Converter& cx, const Node* n) {
  const auto reps = cx.static_ints(n->input(1), "repeats");
  std::string x = cx.tensor(n->input(0));
  const int64_t rank = cx.rank(n->input(0));
  if (static_cast<int64_t>(reps.size()) > rank) {  // torch prepends dims of size 1
    std::vector<int64_t> axes;
    for (int64_t i = 0; i < static_cast<int64_t>(reps.size()) - rank; ++i) axes.push_back(i);
    x = unsqueeze(cx, x, axes);
  }
  cx.set(n->output(0), cx.b.node1("Tile", {x, cx.b.int64s(reps)}, {}, cx.stem(n)));
}

std::vector<std::string> tensors_of_list(Converter& cx, const Value* list, at::ScalarType dtype) {
  const Val& v = cx.val(list);
  std::vector<std::string> names;
  if (!v.runtime()) {
    for (const auto& t : v.example.toListRef()) {
      Val constant;
      constant.example = t;
      names.push_back(cx.constant(t.toTensor().to(dtype), "const"));
    }
    return names;
  }
  for (const auto& item : v.items) {
    if (item.runtime())
      names.push_back(cx.cast(item.name, number_dtype(item.example), dtype));
    else
      names.push_back(cx.constant(item.example.toTensor().to(dtype), "const"));
  }
  return names;
}

void cat(Converter& cx, const Node* n, bool stack) {
  const at::ScalarType dtype = cx.result_dtype();
  auto parts = tensors_of_list(cx, n->input(0), dtype);
  const int64_t out_rank = cx.result().toTensor().dim();
  if (!stack && out_rank > 1) {  // torch.cat skips empty 1-D tensors (a cache's first keys join torch.tensor([]))
    const auto& examples = cx.example(n->input(0)).toListRef();
    std::vector<std::string> kept;
    for (size_t i = 0; i < parts.size(); ++i) {
      const at::Tensor t = examples[i].toTensor();
      if (!(t.dim() == 1 && t.numel() == 0)) kept.push_back(parts[i]);
    }
    parts = kept;
    if (parts.size() == 1) return cx.set(n->output(0), parts[0]);
  }
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), out_rank);
  if (stack)
    for (auto& p : parts) p = unsqueeze(cx, p, {axis});
  cx.set(n->output(0), cx.b.node1("Concat", parts, {{"axis", axis}}, cx.stem(n)));
}

// split / split_with_sizes / chunk / unbind: the pieces' sizes as the example
// inputs give them (their number is fixed by the graph anyway).
void split(Converter& cx, const Node* n, int64_t dim_input, bool unbind) {
  const int64_t rank = cx.rank(n->input(0));
  const int64_t axis = normalized_axis(cx.static_int(n->input(dim_input), "dim"), rank);
  const auto& pieces = cx.result().toTensorVector();
  std::vector<int64_t> sizes;
  for (const auto& p : pieces) sizes.push_back(unbind ? 1 : p.size(axis));
  const auto outs =
      cx.b.node("Split", {cx.tensor(n->input(0)), cx.b.int64s(sizes)}, pieces.size(), {{"axis", axis}}, cx.stem(n));
  Val list;
  for (const auto& o : outs) {
    Val item;
    item.name = unbind ? squeeze(cx, o, {axis}) : o;
    list.items.push_back(item);
  }
  cx.set(n->output(0), list);
}

// A 1-element int64 tensor of an optional int that may be computed at run time.
std::string one_index(Converter& cx, const Value* v, int64_t otherwise) {
  if (cx.is_none(v)) return cx.b.int64s({otherwise});
  if (cx.is_static(v))
    return cx.b.int64s({std::min<int64_t>(cx.example(v).toInt(), std::numeric_limits<int64_t>::max())});
  return unsqueeze(cx, cx.tensor(v, at::kLong), {0});
}

// list[start:end:step] of a list holding run-time values (x.shape[-2:] in
// scripted code): the items taken, as Python takes them.
void slice_list(Converter& cx, const Node* n) {
  const Val& list = cx.val(n->input(0));
  const auto size = static_cast<int64_t>(list.example.toListRef().size());
  const std::vector<Val> items = items_of(list, static_cast<size_t>(size));
  const int64_t step = cx.static_int(n->input(3), "step");
  if (step <= 0) cx.fail(n, "a list slice with a step below 1");
  const auto bound = [&](const Value* v, int64_t otherwise) {
    if (cx.is_none(v)) return otherwise;
    const int64_t i = cx.static_int(v, "a list slice's bound");
    return std::clamp<int64_t>(i < 0 ? i + size : i, 0, size);
  };
  Val taken;
  for (int64_t i = bound(n->input(1), 0), end = bound(n->input(2), size); i < end; i += step)
    taken.items.push_back(items.at(static_cast<size_t>(i)));
  cx.set(n->output(0), taken);
}

// slice(x, dim, start, end, step), or slice(list, start, end, step)
void slice(Converter& cx, const Node* n) {
  if (cx.example(n->input(0)).isList()) return slice_list(cx, n);
  const int64_t rank = cx.rank(n->input(0));
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), rank);
  const std::string start = one_index(cx, n->input(2), 0);
  const std::string end = one_index(cx, n->input(3), std::numeric_limits<int64_t>::max());
  const int64_t step = cx.static_int(n->input(4), "step");
  cx.set(n->output(0),
         cx.b.node1("Slice", {cx.tensor(n->input(0)), start, end, cx.b.int64s({axis}), cx.b.int64s({step})}, {},
                    cx.stem(n)));
}

// narrow(x, dim, start, length)
void narrow(Converter& cx, const Node* n) {
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), cx.rank(n->input(0)));
  const std::string start = one_index(cx, n->input(2), 0);
  std::string end;
  if (cx.is_static(n->input(2)) && cx.is_static(n->input(3)))
    end = cx.b.int64s({cx.example(n->input(2)).toInt() + cx.example(n->input(3)).toInt()});
  else
    end = cx.b.node1("Add", {start, one_index(cx, n->input(3), 0)});
  cx.set(n->output(0), cx.b.node1("Slice", {cx.tensor(n->input(0)), start, end, cx.b.int64s({axis})}, {}, cx.stem(n)));
}

// select(x, dim, index): Gather with a 0-D index drops the dim.
void select(Converter& cx, const Node* n) {
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), cx.rank(n->input(0)));
  const std::string index = cx.tensor(n->input(2), at::kLong);
  cx.set(n->output(0), cx.b.node1("Gather", {cx.tensor(n->input(0)), index}, {{"axis", axis}}, cx.stem(n)));
}

void index_select(Converter& cx, const Node* n) {
  const int64_t axis = normalized_axis(cx.static_int(n->input(1), "dim"), cx.rank(n->input(0)));
  cx.set(n->output(0), cx.b.node1("Gather", {cx.tensor(n->input(0)), cx.tensor(n->input(2), at::kLong)},
                                  {{"axis", axis}}, cx.stem(n)));
}

// where(cond, a, b)
void where(Converter& cx, const Node* n) {
  if (n->inputs().size() == 1) cx.fail(n, "where(condition) alone (nonzero) has no static shape");
  const at::ScalarType dt = cx.result_dtype();
  cx.set(
      n->output(0),
      cx.b.node1("Where", {cx.tensor(n->input(0), at::kBool), cx.tensor(n->input(1), dt), cx.tensor(n->input(2), dt)},
                 {}, cx.stem(n)));
}

// arange(end | start, end[, step], dtype, ...): Range in the result's dtype.
void arange(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  // (end, dtype, layout, device, pin) (start, end, ...) (start, end, step, ...)
  const size_t count = n->inputs().size() >= 5 ? n->inputs().size() - 4 : 1;
  std::string start = cx.scalar_float(0, dt), end, step = cx.scalar_float(1, dt);
  if (count == 1) {
    end = cx.tensor(n->input(0), dt);
  } else {
    start = cx.tensor(n->input(0), dt);
    end = cx.tensor(n->input(1), dt);
    if (count >= 3) step = cx.tensor(n->input(2), dt);
  }
  cx.set(n->output(0), cx.b.node1("Range", {start, end, step}, {}, cx.stem(n)));
}

// ones / zeros / full(size, [value], dtype, ...), their _like forms (input 0
// a tensor whose shape is taken) and x.new_zeros / new_ones / new_full(x,
// size, [value], ...): the size (or tensor) at `size_at`, the fill after it.
void filled(Converter& cx, const Node* n, std::optional<double> value, size_t size_at, bool like) {
  const at::Tensor example = cx.result().toTensor();
  const double fill = value ? *value : cx.static_double(n->input(size_at + 1), "the fill value");
  const std::string shape = like ? cx.shape_of(cx.tensor(n->input(size_at))) : cx.int64_list(n->input(size_at));
  const at::Tensor one = at::full({1}, fill, example.options().device(at::kCPU));
  cx.set(n->output(0), cx.b.node1("ConstantOfShape", {shape}, {{"value", raw(one)}}, cx.stem(n)));
}

// triu / tril(x, diagonal)
void trilu(Converter& cx, const Node* n, bool upper) {
  const std::string k = cx.b.scalar_int64(cx.static_int(n->input(1), "diagonal"));
  cx.set(n->output(0), cx.b.node1("Trilu", {cx.tensor(n->input(0)), k}, {{"upper", int64_t{upper}}}, cx.stem(n)));
}

// Pad in ONNX's mode: torch lists (begin, end) pairs from the last dim, ONNX
// every dim's begin, then every dim's end. Amounts computed at run time (a
// window's padding from the input's size, as in Swin) become a computed list.
void pad_in_mode(Converter& cx, const Node* n, const std::string& mode, const std::optional<double>& value) {
  const int64_t rank = cx.rank(n->input(0));
  const auto count = static_cast<int64_t>(cx.example(n->input(1)).toListRef().size());
  if (count > 2 * rank || count % 2) cx.fail(n, "a pad list of odd length or longer than twice the rank");
  const std::vector<Val> pad = items_of(cx.val(n->input(1)), static_cast<size_t>(count));
  std::vector<Val> pads(static_cast<size_t>(2 * rank));
  for (auto& p : pads) p.example = int64_t{0};
  for (int64_t i = 0; i + 1 < count; i += 2) {
    const int64_t dim = rank - 1 - i / 2;
    pads[static_cast<size_t>(dim)] = pad[static_cast<size_t>(i)];
    pads[static_cast<size_t>(dim + rank)] = pad[static_cast<size_t>(i + 1)];
  }
  std::vector<std::string> inputs{cx.tensor(n->input(0)), cx.int64_list(pads)};
  if (mode == "constant") inputs.push_back(cx.scalar_float(value.value_or(0.0), cx.result_dtype()));
  cx.set(n->output(0), cx.b.node1("Pad", inputs, {{"mode", mode}}, cx.stem(n)));
}

// roll(x, shifts, dims): along each dim, the last `shift` elements moved to
// the front, as a Concat of two Slices. The shift is taken modulo the
// example's size (Swin's half-window shifts are smaller than any input's).
void roll(Converter& cx, const Node* n) {
  const auto shifts = cx.static_ints(n->input(1), "shifts");
  const auto dims = cx.static_ints(n->input(2), "dims");
  if (dims.empty() || dims.size() != shifts.size()) cx.fail(n, "roll over the flattened tensor (no dims)");
  const at::Tensor example = cx.example(n->input(0)).toTensor();
  const std::string input = cx.tensor(n->input(0));
  std::string x = input;
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t axis = normalized_axis(dims[i], example.dim()), size = example.size(axis);
    const int64_t shift = size ? ((shifts[i] % size) + size) % size : 0;
    if (shift == 0) continue;
    const auto part = [&](int64_t begin, int64_t end) {
      return cx.b.node1("Slice", {x, cx.b.int64s({begin}), cx.b.int64s({end}), cx.b.int64s({axis})});
    };
    x = cx.b.node1("Concat", {part(-shift, std::numeric_limits<int64_t>::max()), part(0, -shift)}, {{"axis", axis}},
                   cx.stem(n));
  }
  if (x == input) return pass_through(cx, n);
  cx.set(n->output(0), x);
}

// pad(x, pad, mode, value): F.pad as torch 1.13 and later record it.
void pad(Converter& cx, const Node* n) {
  const std::string mode = cx.example(n->input(2)).toStringRef();
  const std::optional<double> value =
      cx.is_none(n->input(3)) ? std::nullopt : std::optional<double>(cx.static_double(n->input(3), "the pad value"));
  if (mode == "constant") return pad_in_mode(cx, n, "constant", value);
  if (mode == "reflect") return pad_in_mode(cx, n, "reflect", std::nullopt);
  if (mode == "replicate") return pad_in_mode(cx, n, "edge", std::nullopt);
  if (mode == "circular" && cx.options.opset >= 19) return pad_in_mode(cx, n, "wrap", std::nullopt);
  cx.fail(n, "padding in mode '" + mode + "' has no ONNX form at opset " + std::to_string(cx.options.opset) +
                 " (constant, reflect and replicate do; circular needs opset 19)");
}

}  // namespace

void add_tensor_ops(std::map<std::string, OpHandler>& t) {
  t["prim::ListConstruct"] = [](Converter& cx, Node* n) { cx.set(n->output(0), runtime_items(cx, n)); };
  t["prim::TupleConstruct"] = t["prim::ListConstruct"];
  t["prim::ListUnpack"] = unpack;
  t["aten::append"] = append;
  t["prim::DictConstruct"] = dict_construct;
  t["aten::_set_item"] = set_item;
  t["prim::TupleUnpack"] = unpack;
  t["prim::TupleIndex"] = get_item;
  t["aten::__getitem__"] = get_item;
  t["aten::size"] = size;
  for (const std::string op : {"aten::dim", "prim::device", "prim::dtype", "aten::len", "aten::is_floating_point",
                               "prim::layout", "prim::is_cuda", "prim::is_nested", "aten::__isnot__", "aten::__is__"})
    t[op] = static_fact;
  t["aten::view"] = reshape;
  t["aten::reshape"] = reshape;
  t["aten::flatten"] = flatten;
  t["aten::unflatten"] = unflatten;
  t["aten::permute"] = permute;
  t["aten::transpose"] = transpose;
  t["aten::t"] = transpose;
  t["aten::unsqueeze"] = unsqueeze_op;
  t["aten::squeeze"] = squeeze_op;
  t["aten::expand"] = expand;
  t["aten::expand_as"] = expand_as;
  t["aten::repeat"] = repeat;
  t["aten::cat"] = [](Converter& cx, Node* n) { cat(cx, n, false); };
  t["aten::concat"] = t["aten::cat"];
  t["aten::stack"] = [](Converter& cx, Node* n) { cat(cx, n, true); };
  t["aten::split"] = [](Converter& cx, Node* n) { split(cx, n, 2, false); };
  t["aten::split_with_sizes"] = t["aten::split"];
  t["aten::chunk"] = t["aten::split"];
  t["aten::unbind"] = [](Converter& cx, Node* n) { split(cx, n, 1, true); };
  t["aten::slice"] = slice;
  t["aten::narrow"] = narrow;
  t["aten::select"] = select;
  t["aten::index_select"] = index_select;
  t["aten::where"] = where;
  t["aten::arange"] = arange;
  t["aten::ones"] = [](Converter& cx, Node* n) { filled(cx, n, 1.0, 0, false); };
  t["aten::zeros"] = [](Converter& cx, Node* n) { filled(cx, n, 0.0, 0, false); };
  t["aten::full"] = [](Converter& cx, Node* n) { filled(cx, n, std::nullopt, 0, false); };
  t["aten::ones_like"] = [](Converter& cx, Node* n) { filled(cx, n, 1.0, 0, true); };
  t["aten::zeros_like"] = [](Converter& cx, Node* n) { filled(cx, n, 0.0, 0, true); };
  t["aten::full_like"] = [](Converter& cx, Node* n) { filled(cx, n, std::nullopt, 0, true); };
  t["aten::new_zeros"] = [](Converter& cx, Node* n) { filled(cx, n, 0.0, 1, false); };
  t["aten::new_ones"] = [](Converter& cx, Node* n) { filled(cx, n, 1.0, 1, false); };
  t["aten::new_full"] = [](Converter& cx, Node* n) { filled(cx, n, std::nullopt, 1, false); };
  t["aten::triu"] = [](Converter& cx, Node* n) { trilu(cx, n, true); };
  t["aten::tril"] = [](Converter& cx, Node* n) { trilu(cx, n, false); };
  t["aten::constant_pad_nd"] = [](Converter& cx, Node* n) {
    pad_in_mode(cx, n, "constant", cx.static_double(n->input(2), "the pad value"));
  };
  t["aten::pad"] = pad;
  t["aten::roll"] = roll;
  for (const char* d : {"1d", "2d", "3d"}) {
    t[std::string("aten::reflection_pad") + d] = [](Converter& cx, Node* n) { pad_in_mode(cx, n, "reflect", {}); };
    t[std::string("aten::replication_pad") + d] = [](Converter& cx, Node* n) { pad_in_mode(cx, n, "edge", {}); };
  }
}

void concat_lists(Converter& cx, const Node* n) {
  const Val &a = cx.val(n->input(0)), &b = cx.val(n->input(1));
  Val list;
  list.items = items_of(a, a.example.isList() ? a.example.toListRef().size() : 0);
  for (auto& item : items_of(b, b.example.isList() ? b.example.toListRef().size() : 0)) list.items.push_back(item);
  cx.set(n->output(0), list);
}

}  // namespace qforge::onnx_export
