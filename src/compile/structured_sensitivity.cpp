// pruning_settings.sensitivity_threshold with structured pruning: every
// prunable channel group's candidate sparsities (prune/prune_allocation.h)
// measured as the model's relative output error with only that group's
// channels removed, on the first sensitivity_samples calibration rows (the
// same on every rank), the measurements dealt round-robin to the ranks and
// gathered exactly. A group that errs above the threshold is pruned less, and
// the parameters it keeps are taken from the groups that stay below it.
#include <set>

#include "compile/sensitivity.h"
#include "compile/session.h"
#include "metrics/output_error.h"
#include "prune/prune_allocation.h"
#include "runtime/logger.h"
#include "util/text.h"

namespace qforge {
namespace {

// The parameters a group's channels hold: its writers' rows, its readers' columns.
int64_t group_parameters(const ChannelDependencyGroup& g, const WeightOf& weight) {
  int64_t n = 0;
  for (const auto& use : g.uses) {
    if (use.role == ChannelUse::Role::Norm) continue;
    const at::Tensor w = weight(use.layer);
    const bool reader = use.role == ChannelUse::Role::Reader;
    n += w.numel() / w.size(reader ? 1 : 0) * g.channels * (reader ? use.per_channel : 1);
  }
  return n;
}

// Runs `body` with the channels of `g` not in `kept` at zero in every layer
// reading them (the outputs removing them gives), then puts the weights back.
double with_channels_zeroed(const ChannelDependencyGroup& g, const at::Tensor& kept, const WeightOf& weight,
                            const std::function<double()>& body) {
  at::Tensor removed = at::ones({g.channels}, at::kBool);
  removed.index_put_({kept}, false);
  removed = removed.nonzero().flatten();
  std::vector<std::pair<at::Tensor, at::Tensor>> saved;  // weight, as it was
  for (const auto& use : g.uses) {
    if (use.role != ChannelUse::Role::Reader) continue;
    at::Tensor w = weight(use.layer);
    const int64_t p = use.per_channel;
    const at::Tensor columns = ((removed.unsqueeze(1) + use.offset) * p + at::arange(p).unsqueeze(0)).flatten();
    saved.emplace_back(w, w.clone());
    w.index_fill_(1, columns.to(w.device()), 0);
  }
  const auto restore = [&] {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) it->first.copy_(it->second);
  };
  try {
    const double out = body();
    restore();
    return out;
  } catch (...) {
    restore();
    throw;
  }
}

// "conv1", or "conv1 +3" for a group four layers write.
std::string group_label(const ChannelGroup& g) {
  return g.producers.front() + (g.producers.size() > 1 ? " +" + std::to_string(g.producers.size() - 1) : "");
}

}  // namespace

void CompileSession::allocate_channel_sparsity(const std::vector<ChannelDependencyGroup>& groups,
                                               std::vector<ChannelGroup>& described,
                                               const std::vector<at::Tensor>& scores, torch::jit::Module& model,
                                               const WeightOf& weight) {
  const double threshold = *config_.pruning_settings->sensitivity_threshold;
  if (!config_.is_model_pretrained) {
    add_note("is_model_pretrained: false: pruning_settings.sensitivity_threshold not applied (every channel group "
             "loses the share planned)");
    return;
  }
  std::vector<size_t> members;  // the groups taking part: prunable, asked to lose channels
  std::vector<std::vector<LayerPruning>> candidates;
  for (size_t i = 0; i < described.size(); ++i) {
    if (!described[i].reason.empty() || described[i].sparsity <= 0 || !scores[i].defined()) continue;
    members.push_back(i);
    // Each share as the kept channel count makes it (16 channels keep 8 or 16: 0.25 is 0).
    auto shares = sparsity_candidates({PruningMethod::Structured, described[i].sparsity, 0, 0, ""});
    const int64_t channels = described[i].channels;
    for (auto& c : shares)
      c.sparsity = 1.0 - static_cast<double>(channels_to_keep(channels, c.sparsity)) / static_cast<double>(channels);
    candidates.push_back(shares);
  }
  // One measurement per group and distinct kept count (candidates round to the same counts).
  std::vector<std::pair<size_t, int64_t>> items;
  for (size_t k = 0; k < members.size(); ++k) {
    std::set<int64_t> counts;
    for (const auto& c : candidates[k]) counts.insert(channels_to_keep(described[members[k]].channels, c.sparsity));
    for (int64_t keep : counts) items.emplace_back(k, keep);
  }
  SensitivityWork work;
  std::vector<double> errors;
  timer_.run(
      "prune channels: sensitivity",
      [&] {
        const PreparedCompile& p = prepared_;
        const int64_t rows = std::min(config_.compile_options.sensitivity_samples, p.data.total_rows());
        const auto batches = read_all(p.data, {0, rows}, config_.calibration_inputs->batch_size, p.transform);
        log::info("structured pruning: " + std::to_string(items.size()) + " sparsities of " +
                  std::to_string(members.size()) + " channel groups measured on " + std::to_string(rows) +
                  " calibration rows, split over " + std::to_string(rt_.size()) + " rank(s)");
        std::vector<c10::IValue> expected;
        for (const auto& b : batches) expected.push_back(run(model, b));
        for (size_t t = static_cast<size_t>(rt_.rank()); t < items.size(); t += static_cast<size_t>(rt_.size())) {
          const auto [k, keep] = items[t];
          const size_t g = members[k];
          const at::Tensor kept = highest_channels(scores[g], keep);
          work.mine.push_back(t);
          work.measured.push_back(with_channels_zeroed(groups[g], kept, weight, [&] {
            OutputError e;
            for (size_t b = 0; b < batches.size(); ++b) e.add(expected[b], run(model, batches[b]));
            return e.relative();
          }));
        }
      },
      [&] { errors = gather_sensitivity(work, items.size(), *prepared_.comm); });
  std::vector<SparsityChoice> choices;
  for (size_t k = 0; k < members.size(); ++k) {
    const ChannelGroup& g = described[members[k]];
    SparsityChoice c{group_label(g), group_parameters(groups[members[k]], weight), candidates[k], {}};
    for (const auto& candidate : candidates[k]) {
      const int64_t keep = channels_to_keep(g.channels, candidate.sparsity);
      for (size_t t = 0; t < items.size(); ++t)
        if (items[t].first == k && items[t].second == keep) c.errors.push_back(errors[t]);
    }
    choices.push_back(c);
  }
  if (choices.empty()) return;
  const SparsityAllocation allocation = allocate_within_threshold(
      choices, threshold, {"channel group", "the other channel groups", "no channel group", "the channel groups"});
  for (const auto& line : allocation.notes) add_note(line);
  for (size_t k = 0; k < members.size(); ++k) described[members[k]].sparsity = allocation.chosen[k].sparsity;
}

}  // namespace qforge
