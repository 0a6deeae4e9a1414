#include "graph/decompose_attention.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/jit.h>

#include <map>
#include <vector>

#include "graph/inline_calls.h"

namespace qforge {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// The fused ops' semantics (PyTorch's transformer.cpp), one function per op
// with the op's own signature. The attention scales the queries by
// 1/sqrt(head); a mask marks what may not be attended to (bool) or is added to
// the scores (float); a key-padding mask (mask_type 1) is [batch, keys].
const char* const kSource = R"TS(
def _attend(q: Tensor, k: Tensor, v: Tensor, num_head: int, proj_weight: Tensor, proj_bias: Tensor,
            mask: Optional[Tensor], mask_type: Optional[int]) -> Tuple[Tensor, Tensor]:
    b = q.size(0)
    l = q.size(1)
    s = k.size(1)
    e = q.size(2)
    head = e // num_head
    q = q.reshape([b, l, num_head, head]).transpose(1, 2)
    k = k.reshape([b, s, num_head, head]).transpose(1, 2)
    v = v.reshape([b, s, num_head, head]).transpose(1, 2)
    scores = torch.matmul(q / (float(head) ** 0.5), k.transpose(-2, -1))
    if mask is not None:
        m = mask
        if mask_type is not None and mask_type == 1:
            m = m.reshape([b, 1, 1, s])
        if m.is_floating_point():
            scores = scores + m
        else:
            scores = scores.masked_fill(m, float("-inf"))
    p = torch.softmax(scores, -1)
    y = torch.matmul(p, v).transpose(1, 2).reshape([b, l, e])
    return torch.linear(y, proj_weight, proj_bias), p

def _self_attention(x: Tensor, embed_dim: int, num_head: int, qkv_weight: Tensor, qkv_bias: Tensor,
                    proj_weight: Tensor, proj_bias: Tensor, mask: Optional[Tensor],
                    mask_type: Optional[int]) -> Tuple[Tensor, Tensor]:
    qkv = torch.linear(x, qkv_weight, qkv_bias)
    q = qkv[:, :, 0:embed_dim]
    k = qkv[:, :, embed_dim:2 * embed_dim]
    v = qkv[:, :, 2 * embed_dim:3 * embed_dim]
    return _attend(q, k, v, num_head, proj_weight, proj_bias, mask, mask_type)

def _weights(p: Tensor, need_weights: bool, average_attn_weights: bool) -> Tensor:
    if need_weights and average_attn_weights:
        return p.mean(1)
    return p

def self_attention(query: Tensor, key: Tensor, value: Tensor, embed_dim: int, num_head: int,
                   qkv_weight: Tensor, qkv_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor,
                   mask: Optional[Tensor], need_weights: bool, average_attn_weights: bool,
                   mask_type: Optional[int]) -> Tuple[Tensor, Tensor]:
    y, p = _self_attention(query, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, mask_type)
    return y, _weights(p, need_weights, average_attn_weights)

def attention(query: Tensor, key: Tensor, value: Tensor, embed_dim: int, num_head: int,
              qkv_weight: Tensor, qkv_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor,
              mask: Optional[Tensor], need_weights: bool, average_attn_weights: bool,
              mask_type: Optional[int]) -> Tuple[Tensor, Tensor]:
    q = torch.linear(query, qkv_weight[0:embed_dim], qkv_bias[0:embed_dim])
    k = torch.linear(key, qkv_weight[embed_dim:2 * embed_dim], qkv_bias[embed_dim:2 * embed_dim])
    v = torch.linear(value, qkv_weight[2 * embed_dim:3 * embed_dim], qkv_bias[2 * embed_dim:3 * embed_dim])
    y, p = _attend(q, k, v, num_head, proj_weight, proj_bias, mask, mask_type)
    return y, _weights(p, need_weights, average_attn_weights)

def encoder_layer(src: Tensor, embed_dim: int, num_heads: int, qkv_weight: Tensor, qkv_bias: Tensor,
                  proj_weight: Tensor, proj_bias: Tensor, use_gelu: bool, norm_first: bool, eps: float,
                  norm_weight_1: Tensor, norm_bias_1: Tensor, norm_weight_2: Tensor, norm_bias_2: Tensor,
                  ffn_weight_1: Tensor, ffn_bias_1: Tensor, ffn_weight_2: Tensor, ffn_bias_2: Tensor,
                  mask: Optional[Tensor], mask_type: Optional[int]) -> Tensor:
    x = src
    if norm_first:
        x = torch.layer_norm(x, [embed_dim], norm_weight_1, norm_bias_1, eps)
    x, _ = _self_attention(x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, mask_type)
    x = x + src
    if not norm_first:
        x = torch.layer_norm(x, [embed_dim], norm_weight_1, norm_bias_1, eps)
    residual = x
    if norm_first:
        x = torch.layer_norm(x, [embed_dim], norm_weight_2, norm_bias_2, eps)
    h = torch.linear(x, ffn_weight_1, ffn_bias_1)
    if use_gelu:
        h = torch.gelu(h)
    else:
        h = torch.relu(h)
    x = torch.linear(h, ffn_weight_2, ffn_bias_2) + residual
    if not norm_first:
        x = torch.layer_norm(x, [embed_dim], norm_weight_2, norm_bias_2, eps)
    return x
)TS";

// The functions above, compiled once, each with its calls inlined.
const std::map<std::string, std::shared_ptr<Graph>>& decompositions() {
  static const auto graphs = [] {
    const auto unit = torch::jit::compile(kSource);
    std::map<std::string, std::shared_ptr<Graph>> out;
    for (const char* name : {"self_attention", "attention", "encoder_layer"}) {
      auto graph = torch::jit::toGraphFunction(unit->get_function(name)).graph()->copy();
      inline_calls(*graph);  // also where the executor runs unoptimized, as compile() runs it
      out[name] = graph;
    }
    return out;
  }();
  return graphs;
}

// `callee` with the fused node's constant arguments (sizes, flags, a missing
// mask) put in and folded, so only the branches this node takes are left.
std::shared_ptr<Graph> specialized(Graph& callee, const Node* fused) {
  auto graph = callee.copy();
  torch::jit::WithInsertPoint at(graph->block()->nodes().front());
  for (size_t i = 0; i < fused->inputs().size(); ++i) {
    const auto constant = torch::jit::toIValue(fused->input(i));
    if (!constant || constant->isTensor()) continue;
    graph->inputs()[i]->replaceAllUsesWith(graph->insertConstant(*constant));
  }
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
  return graph;
}

void collect_fused(torch::jit::Block* block, std::vector<Node*>& out) {
  for (Node* n : block->nodes()) {
    for (auto* inner : n->blocks()) collect_fused(inner, out);
    const std::string kind = n->kind().toQualString();
    if (kind == "aten::_native_multi_head_attention" || kind == "aten::_transformer_encoder_layer_fwd")
      out.push_back(n);
  }
}

Graph& decomposition_of(const Node* fused) {
  if (fused->kind().toQualString() == std::string("aten::_transformer_encoder_layer_fwd"))
    return *decompositions().at("encoder_layer");
  const bool self = fused->input(0) == fused->input(1) && fused->input(1) == fused->input(2);
  return *decompositions().at(self ? "self_attention" : "attention");
}

}  // namespace

int decompose_fused_attention(Graph& graph) {
  std::vector<Node*> fused;
  collect_fused(graph.block(), fused);
  for (Node* n : fused) {
    const auto callee = specialized(decomposition_of(n), n);
    torch::jit::WithInsertPoint at(n);
    std::vector<Value*> outputs = torch::jit::insertGraph(graph, *callee, n->inputs());
    if (n->outputs().size() > 1) {  // the function returns a tuple: take its parts
      Node* tuple = outputs.at(0)->node();
      TORCH_INTERNAL_ASSERT(tuple->kind() == c10::prim::TupleConstruct);
      outputs.assign(tuple->inputs().begin(), tuple->inputs().end());
    }
    for (size_t i = 0; i < n->outputs().size(); ++i) n->output(i)->replaceAllUsesWith(outputs.at(i));
    n->destroy();
  }
  if (!fused.empty()) torch::jit::EliminateDeadCode(graph.block());
  return static_cast<int>(fused.size());
}

}  // namespace qforge
