// report.html: the compile's report as one self-contained page (inline SVG drawn
// by inline script from the report.json data it embeds; nothing is fetched when
// it is opened). Several compiles (a sweep) make one page comparing them.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace qforge {

// The page for (output directory, report.json text) pairs: one compile's charts
// and layer table, or, for several, their accuracy against size.
std::string report_html(const std::vector<std::pair<std::string, std::string>>& runs);

// The page's HTML with its data placeholder (src/report/report_page.html).
const std::string& report_page_template();

}  // namespace qforge
