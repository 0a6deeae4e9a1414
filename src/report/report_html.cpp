#include "report/report_html.h"

#include "qforge/errors.h"
#include "util/json.h"

namespace qforge {

std::string report_html(const std::vector<std::pair<std::string, std::string>>& runs) {
  json::array list;
  for (const auto& [dir, text] : runs) {
    json::object run;
    run["dir"] = dir;
    boost::system::error_code ec;
    run["report"] = json::parse(text, ec);
    // The file is input here, as a calibration file is to a compile: a bad one is a data error.
    if (ec)
      throw DataError(dir + "/report.json is not a whole JSON report (truncated, or not written by qforge): " +
                      ec.message() + "; compile again to write it");
    list.push_back(run);
  }
  json::object data;
  data["runs"] = list;
  std::string embedded = json::serialize(data);
  // Inside <script>, "</" could end the element early: "<\/" is the same JSON string.
  for (size_t at = embedded.find("</"); at != std::string::npos; at = embedded.find("</", at + 3))
    embedded.replace(at, 2, "<\\/");
  std::string page = report_page_template();
  const std::string placeholder = "/*QFORGE_REPORT_DATA*/";
  page.replace(page.find(placeholder), placeholder.size(), embedded);
  return page;
}

}  // namespace qforge
