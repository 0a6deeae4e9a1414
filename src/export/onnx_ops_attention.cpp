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
  std::string name;  // empty: none
  bool is_bool = true;
  bool blocks = false;  // true marks what may not be attended to (nn.MultiheadAttention), else what may
};

// softmax(q·scale·kᵀ + mask)·v over [..., L, E] queries and [..., S, E] keys
// of rank `rank`; the attention probabilities go to `probabilities`.
std::string attention(Converter& cx, const std::string& q, const std::string& k, const std::string& v, int64_t rank,
                      double scale, const Mask& mask, bool causal, at::ScalarType dt,
                      std::string* probabilities = nullptr) {
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
    const std::string filled =
        b.node1("ConstantOfShape", {shape}, {{"value", raw(at::full({1}, neg_inf, at::TensorOptions().dtype(dt)))}});
    scores = b.node1("Add", {scores, b.node1("Trilu", {filled, b.scalar_int64(1)}, {{"upper", int64_t{1}}})});
  }
  if (!mask.name.empty()) {
    if (mask.is_bool) {
      const std::string blocked = cx.scalar_float(neg_inf, dt);
      scores =
          mask.blocks ? b.node1("Where", {mask.name, blocked, scores}) : b.node1("Where", {mask.name, scores, blocked});
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
  std::string k = cx.tensor(n->input(1), dt), v = cx.tensor(n->input(2), dt);
  // enable_gqa: each key/value head serves a group of query heads (dim -3)
  if (!legacy && n->inputs().size() > 7 && cx.example(n->input(7)).toBool() && rank >= 3) {
    const int64_t query_heads = cx.example(n->input(0)).toTensor().size(-3);
    const int64_t kv_heads = cx.example(n->input(1)).toTensor().size(-3);
    k = repeat_interleave(cx, k, rank, rank - 3, query_heads / kv_heads);
    v = repeat_interleave(cx, v, rank, rank - 3, query_heads / kv_heads);
  }
  std::string probabilities;
  const std::string out = attention(cx, cx.tensor(n->input(0), dt), k, v, rank, scale,
                                    mask_of(cx, n->input(3), false, dt), causal, dt, &probabilities);
  cx.set(n->output(0), out);
  if (legacy) cx.set(n->output(1), probabilities);
}

// One of q, k, v from the packed in-projection: x·W[part]ᵀ + b[part].
std::string projection(Converter& cx, const std::string& x, const at::Tensor& w, const at::Tensor& bias, int64_t part,
                       int64_t width, const std::string& stem) {
  const at::Tensor wp = w.narrow(0, part * width, width).t().contiguous();
  std::string y = cx.b.node1("MatMul", {x, cx.constant(wp, stem + ".in_proj_weight_t")});
  if (bias.defined())
    y = cx.b.node1("Add", {y, cx.constant(bias.narrow(0, part * width, width), stem + ".in_proj_bias")});
  return y;
}

// The inputs of a packed multi-head attention (nn.MultiheadAttention's weights).
struct AttentionInputs {
  const Value* query;
  const Value* key;
  const Value* value;
  const Value* qkv_weight;
  const Value* qkv_bias;
  const Value* proj_weight;
  const Value* proj_bias;
  const Value* mask;      // marks what is blocked; may be None
  int64_t mask_type = 0;  // 0: [L, S], 1: key padding [B, S], 2: [B, H, L, S]
  int64_t width = 0, heads = 0;
};

// Multi-head attention over [B, L, E] inputs with the packed in-projection:
// the output, and the attention probabilities in `probabilities`.
std::string multi_head_attention(Converter& cx, const Node* n, const AttentionInputs& a, std::string* probabilities) {
  const at::ScalarType dt = cx.result_dtype();
  const int64_t head = a.width / a.heads;
  if (!cx.is_static(a.qkv_weight) || !cx.is_static(a.qkv_bias)) cx.fail(n, "the in-projection must be constant");
  const at::Tensor w = cx.example(a.qkv_weight).toTensor();
  const at::Tensor bias = cx.is_none(a.qkv_bias) ? at::Tensor() : cx.example(a.qkv_bias).toTensor();
  const std::string stem = cx.val(a.qkv_weight).origin.empty() ? "attention" : cx.layer_of(cx.val(a.qkv_weight));
  auto& b = cx.b;

  std::vector<std::string> qkv;
  const Val &q = cx.val(a.query), &k = cx.val(a.key), &v = cx.val(a.value);
  if (q.name == k.name && k.name == v.name) {  // self-attention: one MatMul, then split
    std::string packed =
        b.node1("MatMul", {cx.tensor(a.query, dt), cx.constant(w.t().contiguous(), stem + ".in_proj_weight_t")});
    if (bias.defined()) packed = b.node1("Add", {packed, cx.constant(bias, stem + ".in_proj_bias")});
    qkv = b.node("Split", {packed, b.int64s({a.width, a.width, a.width})}, 3, {{"axis", int64_t{-1}}});
  } else {
    const Value* inputs[] = {a.query, a.key, a.value};
    for (int64_t part = 0; part < 3; ++part)
      qkv.push_back(projection(cx, cx.tensor(inputs[part], dt), w, bias, part, a.width, stem));
  }
  const std::string split_shape = b.int64s({0, 0, a.heads, head});
  const std::vector<int64_t> to_heads = {0, 2, 1, 3};
  for (auto& x : qkv) x = b.node1("Transpose", {b.node1("Reshape", {x, split_shape})}, {{"perm", to_heads}});

  Mask mask = mask_of(cx, a.mask, true, dt);
  if (!mask.name.empty() && a.mask_type == 1) mask.name = unsqueeze(cx, mask.name, {1, 2});  // [B, S] -> [B, 1, 1, S]
  std::string y = attention(cx, qkv[0], qkv[1], qkv[2], 4, 1.0 / std::sqrt(static_cast<double>(head)), mask, false, dt,
                            probabilities);
  y = b.node1("Reshape", {b.node1("Transpose", {y}, {{"perm", to_heads}}), b.int64s({0, 0, a.width})});
  y = b.node1("MatMul", {y, cx.weight(a.proj_weight, true, "MatMul")}, {}, stem);
  if (!cx.is_none(a.proj_bias)) y = b.node1("Add", {y, cx.tensor(a.proj_bias, dt)});
  return y;
}

int64_t mask_type_of(Converter& cx, const Value* v) { return cx.is_none(v) ? 0 : cx.static_int(v, "mask_type"); }

// _native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight,
// qkv_bias, proj_weight, proj_bias, mask, need_weights, average_attn_weights, mask_type)
void native_mha(Converter& cx, const Node* n) {
  AttentionInputs a{n->input(0), n->input(1), n->input(2), n->input(5),
                    n->input(6), n->input(7), n->input(8), n->input(9)};
  a.mask_type = mask_type_of(cx, n->input(12));
  a.width = cx.static_int(n->input(3), "embed_dim");
  a.heads = cx.static_int(n->input(4), "num_head");
  std::string probabilities;
  cx.set(n->output(0), multi_head_attention(cx, n, a, &probabilities));
  if (!n->output(1)->uses().empty()) {
    const bool average = cx.example(n->input(11)).toBool();
    cx.set(n->output(1),
           average ? reduce(cx, "ReduceMean", probabilities, std::vector<int64_t>{1}, false) : probabilities);
  }
}

std::string layer_norm(Converter& cx, const std::string& x, const Value* weight, const Value* bias, double eps,
                       at::ScalarType dt) {
  return cx.b.node1("LayerNormalization", {x, cx.tensor(weight, dt), cx.tensor(bias, dt)},
                    {{"axis", int64_t{-1}}, {"epsilon", eps}});
}

// _transformer_encoder_layer_fwd(src, embed_dim, num_heads, qkv_weight, qkv_bias,
// proj_weight, proj_bias, use_gelu, norm_first, eps, norm_weight_1, norm_bias_1,
// norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2,
// mask, mask_type): nn.TransformerEncoderLayer's fused inference path.
void transformer_encoder_layer(Converter& cx, const Node* n) {
  if (cx.options.opset < 17) cx.fail(n, "LayerNormalization needs opset 17 or later");
  const at::ScalarType dt = cx.result_dtype();
  auto& b = cx.b;
  const bool gelu = cx.example(n->input(7)).toBool(), norm_first = cx.example(n->input(8)).toBool();
  const double eps = cx.static_double(n->input(9), "eps");
  const std::string src = cx.tensor(n->input(0), dt);
  AttentionInputs a{n->input(0), n->input(0), n->input(0), n->input(3),
                    n->input(4), n->input(5), n->input(6), n->input(18)};
  a.mask_type = n->inputs().size() > 19 ? mask_type_of(cx, n->input(19)) : 0;
  a.width = cx.static_int(n->input(1), "embed_dim");
  a.heads = cx.static_int(n->input(2), "num_heads");
  const auto attend = [&](const std::string& x) {
    // The attention reads `x` as its self-attention input.
    Converter::Scope scope(cx, n->input(0), x);
    return multi_head_attention(cx, n, a, nullptr);
  };
  const auto feed_forward = [&](const std::string& x) {
    std::string h = b.node1("MatMul", {x, cx.weight(n->input(14), true, "MatMul")});
    h = b.node1("Add", {h, cx.tensor(n->input(15), dt)});
    if (gelu) {
      const std::string inner = b.node1("Erf", {b.node1("Div", {h, cx.scalar_float(std::sqrt(2.0), dt)})});
      h = b.node1("Mul",
                  {b.node1("Mul", {h, cx.scalar_float(0.5, dt)}), b.node1("Add", {inner, cx.scalar_float(1.0, dt)})});
    } else {
      h = b.node1("Relu", {h});
    }
    h = b.node1("MatMul", {h, cx.weight(n->input(16), true, "MatMul")});
    return b.node1("Add", {h, cx.tensor(n->input(17), dt)});
  };
  std::string x = src;
  if (norm_first) {
    x = b.node1("Add", {x, attend(layer_norm(cx, x, n->input(10), n->input(11), eps, dt))});
    x = b.node1("Add", {x, feed_forward(layer_norm(cx, x, n->input(12), n->input(13), eps, dt))});
  } else {
    x = layer_norm(cx, b.node1("Add", {x, attend(x)}), n->input(10), n->input(11), eps, dt);
    x = layer_norm(cx, b.node1("Add", {x, feed_forward(x)}), n->input(12), n->input(13), eps, dt);
  }
  cx.set(n->output(0), x);
}

}  // namespace

void add_attention_ops(std::map<std::string, OpHandler>& t) {
  t["aten::scaled_dot_product_attention"] = [](Converter& cx, Node* n) { sdpa(cx, n, false); };
  t["aten::_scaled_dot_product_attention"] = [](Converter& cx, Node* n) { sdpa(cx, n, true); };
  t["aten::_native_multi_head_attention"] = native_mha;
  t["aten::_transformer_encoder_layer_fwd"] = transformer_encoder_layer;
}

}  // namespace qforge::onnx_export
