// Structured pruning in the plan, report.json and summary.txt: each channel
// group with the layers it couples and the channels it keeps, or why it keeps
// them all; and the model's parameters before and after.
#pragma once
#include <ostream>

#include "qforge/compile.h"
#include "util/json.h"

namespace qforge {

json::object structured_json(const StructuredPruning& s);
// A line for the totals, then one per group (`all`: the whole groups too, with their reasons).
void write_structured_text(std::ostream& out, const StructuredPruning& s, bool all);

}  // namespace qforge
