// Attention: scaled dot-product attention and the fused multi-head attention
// that nn.MultiheadAttention records when traced without autograd, both
// written as ONNX's MatMul / Softmax / Transpose.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

struct Mask {
  std::string name;     // empty: none
  bool is_bool = true;
  bool blocks = false;  // true marks what may not be attended to (nn.MultiheadAttention), else what may
};

// softmax(q·scale·kᵀ + mask)·v over [..., L, E] queries and [..., S, E] keys
// of rank `rank`; the attention probabilities go to `probabilities`.
std::string attention(Converter& cx, const std::string& q, const std::string& k, const std::string& v, int64_t rank,
                      double scale, const Mask& mask, bool causal, at::ScalarType dt, std::string* probabilities = nullptr) {
  auto& b = cx.b;
  std::vector<int64_t> perm(rank);
  for (int64_t i = 0; i < rank; ++i) perm[i] = i;
  std::swap(perm[rank - 1], perm[rank - 2]);
  const std::string kt = b.node1("Transpose", {k}, {{"perm", perm}});
  std::string scores = b.node1("MatMul", {b.node1("Mul", {q, cx.scalar_float(scale, dt)}), kt});
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (causal) {  // -inf above the diagonal
    const std::string l = slice1d(cx, cx.shape_of(q), rank - 2, rank - 1);
    const std::string s = slice1d(cx, cx.shape_of(k), rank - 2, rank - 1);
    const std::string shape = b.node1("Concat", {l, s}, {{"axis", int64_t{0}}});
    const std::string filled = b.node1("ConstantOfShape", {shape}, {{"value", raw(at::full({1}, neg_inf, at::TensorOptions().dtype(dt)))}});
    scores = b.node1("Add", {scores, b.node1("Trilu", {filled, b.scalar_int64(1)}, {{"upper", int64_t{1}}})});
  }
  if (!mask.name.empty()) {
    if (mask.is_bool) {
      const std::string blocked = cx.scalar_float(neg_inf, dt);
      scores = mask.blocks ? b.node1("Where", {mask.name, blocked, scores}) : b.node1("Where", {mask.name, scores, blocked});
    } else {
      scores = b.node1("Add", {scores, mask.name});
    }
  }
  const std::string p = b.node1("Softmax", {scores}, {{"axis", int64_t{-1}}});
  if (probabilities) *probabilities = p;
  return b.node1("MatMul", {p, v});
}

Mask mask_of(Converter& cx, const Value* v, bool blocks, at::ScalarType dt) {
  Mask m;
  if (cx.is_none(v)) return m;
  m.is_bool = cx.dtype(v) == at::kBool;
  m.blocks = blocks;
  m.name = cx.tensor(v, m.is_bool ? at::kBool : dt);
  return m;
}

// scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal[, scale[, enable_gqa]]) and
// 1.13's _scaled_dot_product_attention(q, k, v, mask, dropout_p, need_attn_weights, is_causal).
void sdpa(Converter& cx, const Node* n, bool legacy) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t rank = cx.rank(n->input(0));
  const int64_t head = cx.example(n->input(0)).toTensor().size(-1);
  double scale = 1.0 / std::sqrt(static_cast<double>(head));
  if (!legacy && n->inputs().size() > 6 && !cx.is_none(n->input(6))) scale = cx.static_double(n->input(6), "scale");
  const bool causal = cx.example(n->input(legacy ? 6 : 5)).toBool();
  std::string probabilities;
  const std::string out = attention(cx, cx.tensor(n->input(0), dt), cx.tensor(n->input(1), dt), cx.tensor(n->input(2), dt),
                                    rank, scale, mask_of(cx, n->input(3), false, dt), causal, dt, &probabilities);
  cx.set(n->output(0), out);
  if (legacy) cx.set(n->output(1), probabilities);
}

// One of q, k, v from the packed in-projection: x·W[part]ᵀ + b[part].
std::string projection(Converter& cx, const std::string& x, const at::Tensor& w, const at::Tensor& bias, int64_t part,
                       int64_t width, const std::string& stem) {
  const at::Tensor wp = w.narrow(0, part * width, width).t().contiguous();
  std::string y = cx.b.node1("MatMul", {x, cx.constant(wp, stem + ".in_proj_weight_t")});
  if (bias.defined()) y = cx.b.node1("Add", {y, cx.constant(bias.narrow(0, part * width, width), stem + ".in_proj_bias")});
  return y;
}

// _native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight,
// qkv_bias, proj_weight, proj_bias, mask, need_weights, average_attn_weights, mask_type)
// over [B, L, E] inputs; the mask marks what is blocked.
void native_mha(Converter& cx, const Node* n) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t width = cx.static_int(n->input(3), "embed_dim");
  const int64_t heads = cx.static_int(n->input(4), "num_head");
  const int64_t head = width / heads;
  if (!cx.is_static(n->input(5)) || !cx.is_static(n->input(6))) cx.fail(n, "the in-projection must be constant");
  const at::Tensor w = cx.example(n->input(5)).toTensor();
  const at::Tensor bias = cx.is_none(n->input(6)) ? at::Tensor() : cx.example(n->input(6)).toTensor();
  const std::string stem = cx.val(n->input(5)).origin.empty() ? "attention" : cx.layer_of(cx.val(n->input(5)));
  auto& b = cx.b;

  const std::string query = cx.tensor(n->input(0), dt);
  std::vector<std::string> qkv;
  if (cx.val(n->input(0)).name == cx.val(n->input(1)).name && cx.val(n->input(1)).name == cx.val(n->input(2)).name) {
    std::string packed = b.node1("MatMul", {query, cx.constant(w.t().contiguous(), stem + ".in_proj_weight_t")});
    if (bias.defined()) packed = b.node1("Add", {packed, cx.constant(bias, stem + ".in_proj_bias")});
    qkv = b.node("Split", {packed, b.int64s({width, width, width})}, 3, {{"axis", int64_t{-1}}});
  } else {
    for (int64_t part = 0; part < 3; ++part)
      qkv.push_back(projection(cx, cx.tensor(n->input(part), dt), w, bias, part, width, stem));
  }
  const std::string split_shape = b.int64s({0, 0, heads, head});
  const std::vector<int64_t> to_heads = {0, 2, 1, 3};
  for (auto& x : qkv) x = b.node1("Transpose", {b.node1("Reshape", {x, split_shape})}, {{"perm", to_heads}});

  Mask mask = mask_of(cx, n->input(9), true, dt);
  if (!mask.name.empty()) {
    const int64_t mask_type = cx.is_none(n->input(12)) ? 0 : cx.static_int(n->input(12), "mask_type");
    if (mask_type == 1) mask.name = unsqueeze(cx, mask.name, {1, 2});  // key padding [B, S] -> [B, 1, 1, S]
  }
  std::string probabilities;
  std::string y = attention(cx, qkv[0], qkv[1], qkv[2], 4, 1.0 / std::sqrt(static_cast<double>(head)), mask, false, dt,
                            &probabilities);
  y = b.node1("Reshape", {b.node1("Transpose", {y}, {{"perm", to_heads}}), b.int64s({0, 0, width})});
  y = b.node1("MatMul", {y, cx.weight(n->input(7), true, "MatMul")}, {}, stem);
  if (!cx.is_none(n->input(8))) y = b.node1("Add", {y, cx.tensor(n->input(8), dt)});
  cx.set(n->output(0), y);
  if (!n->output(1)->uses().empty()) {
    const bool average = cx.example(n->input(11)).toBool();
    cx.set(n->output(1), average ? reduce(cx, "ReduceMean", probabilities, std::vector<int64_t>{1}, false) : probabilities);
  }
}

}  // namespace

void add_attention_ops(std::map<std::string, OpHandler>& t) {
  t["aten::scaled_dot_product_attention"] = [](Converter& cx, Node* n) { sdpa(cx, n, false); };
  t["aten::_scaled_dot_product_attention"] = [](Converter& cx, Node* n) { sdpa(cx, n, true); };
  t["aten::_native_multi_head_attention"] = native_mha;
}

}  // namespace qforge::onnx_export
