#include "compile/structured_report.h"

#include "util/text.h"

namespace qforge {
namespace {

std::string group_text(const ChannelGroup& g) {
  std::string text = join(g.producers);
  if (!g.readers.empty()) text += " -> " + join(g.readers);
  return text;
}

}  // namespace

json::object structured_json(const StructuredPruning& s) {
  json::array groups;
  for (const auto& g : s.groups) {
    json::object o{{"producers", json::array(g.producers.begin(), g.producers.end())},
                   {"readers", json::array(g.readers.begin(), g.readers.end())},
                   {"channels", g.channels},
                   {"kept", g.kept}};
    if (!g.kept_channels.empty()) o["kept_channels"] = json::array(g.kept_channels.begin(), g.kept_channels.end());
    if (!g.reason.empty()) o["whole"] = g.reason;
    groups.push_back(o);
  }
  return json::object{{"importance", s.importance},
                      {"dense_parameters", s.dense_parameters},
                      {"parameters", s.parameters},
                      {"groups", groups}};
}

void write_structured_text(std::ostream& out, const StructuredPruning& s, bool all) {
  int64_t pruned = 0;
  for (const auto& g : s.groups) pruned += g.kept < g.channels ? 1 : 0;
  out << "\n  structured pruning (" << s.importance << "): " << pruned << " of " << s.groups.size()
      << " channel groups pruned, parameters " << s.dense_parameters << " -> " << s.parameters << " ("
      << fixed(100.0 * static_cast<double>(s.parameters) / static_cast<double>(std::max<int64_t>(s.dense_parameters, 1)),
               1)
      << "%)\n";
  for (const auto& g : s.groups) {
    if (g.kept < g.channels)
      out << "    " << g.kept << " of " << g.channels << " channels: " << group_text(g) << "\n";
    else if (all)
      out << "    whole (" << g.channels << "): " << group_text(g) << ": " << g.reason << "\n";
  }
}

}  // namespace qforge
