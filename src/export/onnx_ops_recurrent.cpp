// Recurrent layers: nn.LSTM and nn.GRU as ONNX's LSTM and GRU, layer by layer
// (ONNX's ops hold one layer, one or two directions), kept in floating point.
// PyTorch orders the gates i, f, g, o (LSTM) and r, z, n (GRU); ONNX i, o, f, c
// and z, r, h, so the weights are reordered; GRU's linear_before_reset = 1 is
// PyTorch's reset gate.
#include <ATen/ATen.h>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

struct Recurrent {
  const char* op;
  int64_t gates;               // 4 (LSTM) or 3 (GRU)
  std::vector<int64_t> order;  // ONNX's gate k is PyTorch's gate order[k]
  size_t first_flag;           // index of has_biases among the node's inputs
};

const Recurrent kLstm{"LSTM", 4, {0, 3, 1, 2}, 3};
const Recurrent kGru{"GRU", 3, {1, 0, 2}, 3};

// PyTorch's [gates * hidden, ...] weight with its gate blocks in ONNX's order.
at::Tensor reorder_gates(const at::Tensor& w, const Recurrent& r) {
  const auto blocks = w.chunk(r.gates, 0);
  std::vector<at::Tensor> ordered;
  for (int64_t k : r.order) ordered.push_back(blocks[static_cast<size_t>(k)]);
  return at::cat(ordered, 0);
}

void recurrent(Converter& cx, const Node* n, const Recurrent& r) {
  const at::ScalarType dt = cx.result_dtype();
  const auto params = cx.example(n->input(2)).toTensorVector();
  if (!cx.is_static(n->input(2))) cx.fail(n, "recurrent weights computed at run time");
  const bool biases = cx.example(n->input(r.first_flag)).toBool();
  const int64_t layers = cx.static_int(n->input(r.first_flag + 1), "num_layers");
  if (cx.example(n->input(r.first_flag + 3)).toBool()) cx.fail(n, "a recurrent layer in training mode (call eval())");
  const bool bidirectional = cx.example(n->input(r.first_flag + 4)).toBool();
  const bool batch_first = cx.example(n->input(r.first_flag + 5)).toBool();
  const int64_t directions = bidirectional ? 2 : 1;
  const int64_t per_direction = biases ? 4 : 2;
  const int64_t hidden = params.at(1).size(1);  // w_hh: [gates * hidden, hidden]
  auto& b = cx.b;
  std::string x = cx.tensor(n->input(0), dt);
  if (batch_first) x = b.node1("Transpose", {x}, {{"perm", std::vector<int64_t>{1, 0, 2}}});
  // initial states [layers * directions, batch, hidden]: LSTM's (h0, c0), GRU's h0
  std::vector<std::string> initial;
  if (r.gates == 4) {  // a list (h0, c0), each computed at run time (zeros of the batch's size) or constant
    const Val& hx = cx.val(n->input(1));
    const auto examples = cx.example(n->input(1)).toTensorVector();
    for (size_t i = 0; i < examples.size(); ++i)
      initial.push_back(i < hx.items.size() && hx.items[i].runtime()
                            ? cx.cast(hx.items[i].name, examples[i].scalar_type(), dt)
                            : cx.constant(examples[i].to(dt)));
  } else {
    initial.push_back(cx.tensor(n->input(1), dt));
  }
  std::vector<std::string> last_h, last_c;
  for (int64_t layer = 0; layer < layers; ++layer) {
    std::vector<at::Tensor> w, rw, bias;
    for (int64_t d = 0; d < directions; ++d) {
      const size_t at = static_cast<size_t>((layer * directions + d) * per_direction);
      w.push_back(reorder_gates(params.at(at), r));
      rw.push_back(reorder_gates(params.at(at + 1), r));
      bias.push_back(biases ? at::cat({reorder_gates(params.at(at + 2), r), reorder_gates(params.at(at + 3), r)})
                            : at::zeros({2 * r.gates * hidden}, params.at(at).options()));
    }
    const std::string stem = cx.stem(n);
    std::vector<std::string> inputs = {x, cx.constant(at::stack(w).to(dt), stem + ".weight_ih"),
                                       cx.constant(at::stack(rw).to(dt), stem + ".weight_hh"),
                                       cx.constant(at::stack(bias).to(dt), stem + ".bias"), ""};
    const auto states = [&](const std::string& all) {  // this layer's slice of [layers * directions, ...]
      return b.node1("Slice",
                     {all, b.int64s({layer * directions}), b.int64s({(layer + 1) * directions}), b.int64s({0})});
    };
    for (const auto& s : initial) inputs.push_back(states(s));
    Attributes attributes = {{"hidden_size", hidden},
                             {"direction", std::string(bidirectional ? "bidirectional" : "forward")}};
    if (r.gates == 3) attributes.push_back({"linear_before_reset", int64_t{1}});
    const auto outs = b.node(r.op, inputs, r.gates == 4 ? 3 : 2, attributes, stem);
    // Y [seq, directions, batch, hidden] -> [seq, batch, directions * hidden]
    const std::string y = b.node1("Transpose", {outs[0]}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
    x = b.node1("Reshape", {y, b.int64s({0, 0, -1})});
    last_h.push_back(outs[1]);
    if (r.gates == 4) last_c.push_back(outs[2]);
  }
  if (batch_first) x = b.node1("Transpose", {x}, {{"perm", std::vector<int64_t>{1, 0, 2}}});
  const auto joined = [&](const std::vector<std::string>& parts) {
    return parts.size() == 1 ? parts[0] : b.node1("Concat", parts, {{"axis", int64_t{0}}});
  };
  cx.set(n->output(0), x);
  cx.set(n->output(1), joined(last_h));
  if (r.gates == 4) cx.set(n->output(2), joined(last_c));
}

}  // namespace

void add_recurrent_ops(std::map<std::string, OpHandler>& t) {
  t["aten::lstm"] = [](Converter& cx, Node* n) { recurrent(cx, n, kLstm); };
  t["aten::gru"] = [](Converter& cx, Node* n) { recurrent(cx, n, kGru); };
}

}  // namespace qforge::onnx_export
