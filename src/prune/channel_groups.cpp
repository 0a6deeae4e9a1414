#include "prune/channel_groups.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "graph/fake_quant_graph.h"
#include "graph/rewrite.h"

namespace qforge {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// Channels flowing through one tensor: spaces side by side along its channel
// axis (1: [N, C, ...]; last: [..., C]); `flat`: flattened from [N, C, ...]
// into features, each channel a run of them.
struct Flow {
  std::vector<std::pair<size_t, int64_t>> segments;  // (space, channels)
  bool channels_last = false;
  bool flat = false;
  int64_t width() const {
    return std::accumulate(segments.begin(), segments.end(), int64_t{0},
                           [](int64_t sum, const auto& s) { return sum + s.second; });
  }
};

// Ops applied to each element alike: channels pass in any layout.
const std::set<std::string>& pointwise_ops() {
  static const std::set<std::string> ops = {
      "aten::relu",       "aten::relu_",         "aten::relu6",       "aten::hardtanh",    "aten::hardtanh_",
      "aten::gelu",       "aten::silu",          "aten::silu_",       "aten::sigmoid",     "aten::sigmoid_",
      "aten::tanh",       "aten::tanh_",         "aten::hardswish",   "aten::hardswish_",  "aten::hardsigmoid",
      "aten::hardsigmoid_", "aten::leaky_relu",  "aten::leaky_relu_", "aten::elu",         "aten::elu_",
      "aten::mish",       "aten::dropout",       "aten::dropout_",    "aten::contiguous",  "aten::clone",
      "aten::detach",     "aten::to"};
  return ops;
}

// Ops over the spatial axes of [N, C, ...]: channels pass where they are on axis 1.
const std::set<std::string>& spatial_ops() {
  static const std::set<std::string> ops = {
      "aten::max_pool1d",          "aten::max_pool2d",          "aten::max_pool3d",
      "aten::avg_pool1d",          "aten::avg_pool2d",          "aten::avg_pool3d",
      "aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d",
      "aten::adaptive_max_pool2d", "aten::upsample_nearest2d",  "aten::upsample_bilinear2d",
      "aten::feature_dropout"};
  return ops;
}

const std::set<std::string>& elementwise_ops() {
  static const std::set<std::string> ops = {"aten::add", "aten::add_", "aten::sub", "aten::sub_",
                                            "aten::mul", "aten::mul_", "aten::div", "aten::div_"};
  return ops;
}

bool is_tensor(const Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

std::optional<int64_t> constant_int(Value* v) {
  const auto iv = torch::jit::toIValue(v);
  if (iv && iv->isInt()) return iv->toInt();
  return std::nullopt;
}

std::optional<std::vector<int64_t>> constant_ints(Value* v) {
  const auto iv = torch::jit::toIValue(v);
  if (iv && iv->isIntList()) return iv->toIntVector();
  if (v->node()->kind() != c10::prim::ListConstruct) return std::nullopt;
  std::vector<int64_t> out;
  for (Value* item : v->node()->inputs()) {
    const auto i = constant_int(item);
    if (!i) return std::nullopt;
    out.push_back(*i);
  }
  return out;
}

}  // namespace

std::optional<size_t> convolution_groups_input(const Node* n) {
  const std::string kind = n->kind().toQualString();
  if (kind == "aten::_convolution") return 8;
  if (kind == "aten::conv1d" || kind == "aten::conv2d" || kind == "aten::conv3d") return 6;
  return std::nullopt;
}

namespace {

class Analysis {
 public:
  Analysis(torch::jit::Graph& graph, const std::map<std::string, LayerFacts>& facts) : graph_(graph), facts_(facts) {}

  ChannelGraph run() {
    for (Node* n : graph_.nodes()) visit(n);
    for (Value* value : flowing_) {  // in graph order: the first reason found is the one reported
      const Flow& flow = flows_.at(value);
      for (const auto& use : value->uses())
        if (!handled_.count(use.user) && !reads_no_channel_count(use.user)) {
          const std::string what = use.user->kind() == c10::prim::Return
                                       ? std::string("are an output of the method")
                                       : std::string("reach ") + use.user->kind().toQualString();
          block(flow, what);
        }
    }
    return groups();
  }

 private:
  // ---- spaces: union-find, each root a group ----
  size_t new_space(int64_t channels) {
    parent_.push_back(parent_.size());
    spaces_.push_back({channels, {}, ""});
    return parent_.size() - 1;
  }
  size_t root(size_t s) {
    while (parent_[s] != s) s = parent_[s] = parent_[parent_[s]];
    return s;
  }
  void block_space(size_t s, const std::string& why) {
    auto& g = spaces_[root(s)];
    if (g.reason.empty()) g.reason = why;
  }
  void block(const Flow& f, const std::string& why) {
    for (const auto& [s, w] : f.segments) block_space(s, "its channels " + why);
  }
  void unite(size_t a, size_t b, const std::string& where) {
    a = root(a), b = root(b);
    if (a == b) return;
    parent_[b] = a;
    auto& ga = spaces_[a];
    auto& gb = spaces_[b];
    ga.uses.insert(ga.uses.end(), gb.uses.begin(), gb.uses.end());
    if (ga.reason.empty()) ga.reason = gb.reason;
    if (ga.channels != gb.channels)
      block_space(a, "couples " + std::to_string(ga.channels) + " and " + std::to_string(gb.channels) +
                         " channels at " + where);
  }
  // Two flows that meet elementwise: the same channels, space by space.
  void couple(const Flow& a, const Flow& b, const std::string& where) {
    bool same = a.segments.size() == b.segments.size() && a.channels_last == b.channels_last && a.flat == b.flat;
    for (size_t i = 0; same && i < a.segments.size(); ++i) same = a.segments[i].second == b.segments[i].second;
    if (!same) {
      block(a, "meet channels laid out otherwise at " + where);
      block(b, "meet channels laid out otherwise at " + where);
      return;
    }
    for (size_t i = 0; i < a.segments.size(); ++i) unite(a.segments[i].first, b.segments[i].first, where);
  }
  void add_use(size_t space, ChannelUse use) { spaces_[root(space)].uses.push_back(std::move(use)); }

  void set_flow(Value* v, const Flow& f) {
    if (flows_.emplace(v, f).second) flowing_.push_back(v);
  }

  const Flow* flow_of(Value* v) const {
    const auto found = flows_.find(v);
    return found == flows_.end() ? nullptr : &found->second;
  }

  // ---- nodes ----
  void visit(Node* n) {
    const std::string kind = n->kind().toQualString();
    if (const auto layer = layer_of(n)) return visit_layer(n, *layer);
    if (kind == "aten::cat") return visit_cat(n);  // its flows are in the list it reads
    bool any = false;
    for (Value* in : n->inputs()) any = any || flow_of(in);
    if (!any) return;
    if (pointwise_ops().count(kind)) return visit_passthrough(n, false);
    if (spatial_ops().count(kind)) return visit_passthrough(n, true);
    if (elementwise_ops().count(kind)) return visit_elementwise(n);
    if (kind == "aten::flatten") return visit_flatten(n);
    if (kind == "aten::view" || kind == "aten::reshape") return visit_reshape(n);
    if (kind == "aten::mean") return visit_mean(n);
    if (kind == "aten::batch_norm") return visit_batch_norm(n);
  }

  // x.dim() (the rank, also in a shape check's message), x.size(0) (the batch),
  // or x.size() only for its length or to fill an adaptive pooling's unset
  // output sizes (spatial): nothing that counts channels.
  static bool reads_no_channel_count(const Node* n) {
    const std::string kind = n->kind().toQualString();
    if (kind == "aten::dim") return true;
    if (kind != "aten::size") return false;
    if (n->inputs().size() > 1) return constant_int(n->input(1)) == std::optional<int64_t>(0);
    for (const auto& use : n->output()->uses()) {
      const std::string kind = use.user->kind().toQualString();
      if (kind != "aten::len" && kind != "aten::list_with_default") return false;
    }
    return true;
  }

  std::optional<std::string> layer_of(const Node* n) const {
    if (!consumes_activation(n)) return std::nullopt;
    const Node* read = n->input(1)->node();
    if (read->kind() != c10::prim::GetAttr || read->s(c10::attr::name) != "weight") return std::nullopt;
    const auto path = attribute_path(read->input(), graph_.inputs()[0]);
    if (!path || !facts_.count(*path)) return std::nullopt;
    return path;
  }

  void visit_layer(Node* n, const std::string& layer) {
    const LayerFacts& facts = facts_.at(layer);
    const std::string kind = n->kind().toQualString();
    const bool linear = kind == "aten::linear";
    const auto groups_at = convolution_groups_input(n);
    const int64_t groups = groups_at ? constant_int(n->input(*groups_at)).value_or(-1) : 1;
    const bool transposed = kind.find("transpose") != std::string::npos ||
                            (kind == "aten::_convolution" && torch::jit::toIValue(n->input(6)) &&
                             torch::jit::toIValue(n->input(6))->toBool());
    const int64_t outputs = facts.weight_shape.at(0);
    const bool depthwise = !linear && !transposed && groups > 1 && facts.weight_shape.size() > 1 &&
                           facts.weight_shape[1] == 1 && groups == outputs;
    handled_.insert(n);
    if (const Flow* in = flow_of(n->input(0))) {
      if (depthwise && !in->flat && !in->channels_last && in->width() == outputs)
        return visit_depthwise(n, layer, *in);
      read_flow(n, layer, *in, linear, groups, transposed);
    }
    if (transposed || (!linear && groups != 1)) return;  // writes channels that stay (grouped, transposed)
    const size_t space = new_space(outputs);
    add_use(space, {layer, ChannelUse::Role::Writer, 0, 1, n});
    if (!facts.keep_whole.empty()) block_space(space, "'" + layer + "' stays whole: " + facts.keep_whole);
    if (n->input(1)->uses().size() != 1) block_space(space, "'" + layer + "' has its weight read more than once");
    set_flow(n->output(), Flow{{{space, outputs}}, linear, false});
  }

  void read_flow(Node* n, const std::string& layer, const Flow& in, bool linear, int64_t groups, bool transposed) {
    const LayerFacts& facts = facts_.at(layer);
    const int64_t inputs = facts.weight_shape.size() > 1 ? facts.weight_shape[1] : -1;
    std::string why;
    int64_t per_channel = 1;
    if (transposed) why = "reach the transposed convolution '" + layer + "'";
    else if (!linear && groups != 1) why = "reach the grouped convolution '" + layer + "'";
    else if (linear != (in.channels_last || in.flat)) why = "reach '" + layer + "' along another axis";
    else if (in.flat && inputs % in.width() == 0) per_channel = inputs / in.width();
    else if (inputs != in.width()) why = "reach '" + layer + "' in a shape the analysis cannot follow";
    if (!why.empty()) return block(in, why);
    if (!facts.keep_whole.empty()) return block(in, "are read by '" + layer + "', which stays whole: " + facts.keep_whole);
    int64_t offset = 0;
    for (const auto& [space, width] : in.segments) {
      add_use(space, {layer, ChannelUse::Role::Reader, offset, per_channel, n});
      offset += width;
    }
  }

  void visit_depthwise(Node* n, const std::string& layer, const Flow& in) {
    int64_t offset = 0;
    for (const auto& [space, width] : in.segments) {
      add_use(space, {layer, ChannelUse::Role::Depthwise, offset, 1, n});
      offset += width;
    }
    if (!facts_.at(layer).keep_whole.empty())
      block(in, "pass '" + layer + "', which stays whole: " + facts_.at(layer).keep_whole);
    set_flow(n->output(), in);
  }

  // An op that keeps channels apart: its first input's flow is its output's.
  // `spatial`: only while the channels are on axis 1 (else it would pool them).
  void visit_passthrough(Node* n, bool spatial) {
    const Flow* in = flow_of(n->input(0));
    for (size_t i = 1; i < n->inputs().size(); ++i)
      if (flow_of(n->input(i))) return;  // another role than input: left unhandled
    if (!in || (spatial && (in->channels_last || in->flat))) return;
    handled_.insert(n);
    set_flow(n->output(0), *in);
  }

  void visit_elementwise(Node* n) {
    const std::string kind = n->kind().toQualString();
    const Flow* a = flow_of(n->input(0));
    const Flow* b = flow_of(n->input(1));
    handled_.insert(n);
    if (a && b) {
      couple(*a, *b, kind);
    } else if (is_tensor(n->input(0)) && is_tensor(n->input(1))) {
      // A tensor the analysis does not follow (an input, a parameter) may
      // broadcast over the channels: removing some would not fit it.
      block(a ? *a : *b, "meet a tensor the analysis cannot follow at " + kind);
    }
    set_flow(n->output(), a ? *a : *b);
  }

  void visit_cat(Node* n) {
    Node* list = n->input(0)->node();
    const auto dim = constant_int(n->input(1));
    if (list->kind() != c10::prim::ListConstruct || !dim || n->input(0)->uses().size() != 1) return;
    std::vector<const Flow*> parts;
    for (Value* v : list->inputs()) parts.push_back(flow_of(v));
    if (std::none_of(parts.begin(), parts.end(), [](const Flow* p) { return p != nullptr; })) return;
    handled_.insert(list);
    handled_.insert(n);
    for (const Flow* p : parts)
      if (!p) {
        for (const Flow* q : parts)
          if (q) block(*q, "are concatenated with a tensor the analysis cannot follow");
        return;
      }
    const bool channels_last = parts[0]->channels_last;
    const bool along_channels = !parts[0]->flat && (channels_last ? *dim == -1 : *dim == 1);
    Flow out = *parts[0];
    if (along_channels) {
      out.segments.clear();
      for (const Flow* p : parts) {
        if (p->channels_last != channels_last || p->flat) {
          for (const Flow* q : parts) block(*q, "are concatenated along different axes");
          return;
        }
        out.segments.insert(out.segments.end(), p->segments.begin(), p->segments.end());
      }
    } else {
      for (size_t i = 1; i < parts.size(); ++i) couple(*parts[0], *parts[i], "aten::cat");
    }
    set_flow(n->output(), out);
  }

  void visit_flatten(Node* n) {
    const Flow* in = flow_of(n->input(0));
    const auto start = constant_int(n->input(1));
    const auto end = constant_int(n->input(2));
    if (!in || in->channels_last || in->flat || start != 1 || end != -1) return;
    handled_.insert(n);
    Flow out = *in;
    out.flat = true;
    set_flow(n->output(), out);
  }

  // x.view(batch, features): a flatten, its constant size recorded.
  void visit_reshape(Node* n) {
    const Flow* in = flow_of(n->input(0));
    Node* list = n->input(1)->node();
    if (!in || in->channels_last || in->flat || list->kind() != c10::prim::ListConstruct ||
        list->inputs().size() != 2 || n->input(1)->uses().size() != 1)
      return;
    const auto features = constant_int(list->input(1));
    if (!features) return;
    handled_.insert(n);
    Flow out = *in;
    out.flat = true;
    set_flow(n->output(), out);
    if (*features != -1) {
      FlattenSize f{list, 1, {}};
      for (const auto& s : in->segments) f.segments.push_back(s);  // spaces, resolved to groups at the end
      flatten_sizes_.push_back(f);
    }
  }

  // A batch norm a convolution did not absorb (after an add, a concatenation,
  // a Linear): its per-channel tensors lose the channels its input loses.
  void visit_batch_norm(Node* n) {
    const Flow* in = flow_of(n->input(0));
    std::optional<std::string> module;
    for (size_t i = 1; i <= 4 && !module; ++i)
      if (n->input(i)->node()->kind() == c10::prim::GetAttr)
        module = attribute_path(n->input(i)->node()->input(), graph_.inputs()[0]);
    for (size_t i = 1; i <= 4; ++i)
      if (flow_of(n->input(i))) return;
    if (!in || in->flat || !module) return;
    handled_.insert(n);
    const auto [earlier, first] = norm_inputs_.emplace(*module, *in);
    if (!first) {  // one module normalizing two tensors: both keep their channels
      block(earlier->second, "pass the batch norm '" + *module + "', which the method calls twice");
      block(*in, "pass the batch norm '" + *module + "', which the method calls twice");
    }
    int64_t offset = 0;
    for (const auto& [space, width] : in->segments) {
      add_use(space, {*module, ChannelUse::Role::Norm, offset, 1, n});
      offset += width;
    }
    set_flow(n->output(), *in);
  }

  // A mean over the spatial axes of [N, C, ...]: channels stay on axis 1, or
  // become the last axis when the reduced axes are dropped.
  void visit_mean(Node* n) {
    const Flow* in = flow_of(n->input(0));
    if (!in || in->channels_last || in->flat || n->inputs().size() < 3) return;
    const auto dims = constant_ints(n->input(1));
    const auto keep = torch::jit::toIValue(n->input(2));
    if (!dims || dims->empty() || !keep || !keep->isBool()) return;
    for (int64_t d : *dims)
      if (d < 2) return;
    handled_.insert(n);
    Flow out = *in;
    out.channels_last = !keep->toBool();
    set_flow(n->output(), out);
  }

  ChannelGraph groups() {
    ChannelGraph out;
    std::map<size_t, size_t> group_of;
    for (size_t s = 0; s < spaces_.size(); ++s) {
      if (root(s) != s) continue;
      group_of[s] = out.groups.size();
      ChannelDependencyGroup g;
      g.channels = spaces_[s].channels;
      g.uses = spaces_[s].uses;
      g.reason = spaces_[s].reason;
      out.groups.push_back(std::move(g));
    }
    for (auto f : flatten_sizes_) {
      for (auto& seg : f.segments) seg.first = group_of.at(root(seg.first));
      out.flatten_sizes.push_back(f);
    }
    return out;
  }

  struct Space {
    int64_t channels;
    std::vector<ChannelUse> uses;
    std::string reason;
  };

  torch::jit::Graph& graph_;
  const std::map<std::string, LayerFacts>& facts_;
  std::vector<size_t> parent_;
  std::vector<Space> spaces_;
  std::map<Value*, Flow> flows_;
  std::vector<Value*> flowing_;  // the keys of flows_, in graph order
  std::set<Node*> handled_;
  std::vector<FlattenSize> flatten_sizes_;
  std::map<std::string, Flow> norm_inputs_;  // batch norm module -> the flow it normalizes
};

}  // namespace

ChannelGraph find_channel_groups(torch::jit::Graph& graph, const std::map<std::string, LayerFacts>& facts) {
  return Analysis(graph, facts).run();
}

}  // namespace qforge
