// Resizing: F.interpolate and nn.Upsample (the upsample_* ops) as ONNX Resize.
#include <ATen/ATen.h>

#include "export/onnx_ops.h"

namespace qforge::onnx_export {
namespace {

struct Interpolation {
  std::string mode;            // Resize's: nearest, linear or cubic
  bool exact_nearest = false;  // nearest-exact: the nearest pixel centre
  bool takes_align_corners = false;
};

// The coordinate mapping PyTorch uses: nearest reads pixel floor(i / scale),
// nearest-exact the pixel whose centre is nearest, the others the corners
// (align_corners) or the centres of the pixels.
Attributes mapping(const Interpolation& kind, bool align_corners) {
  Attributes a = {{"mode", kind.mode}};
  if (kind.mode == "nearest") {
    a.push_back({"coordinate_transformation_mode", std::string(kind.exact_nearest ? "half_pixel" : "asymmetric")});
    a.push_back({"nearest_mode", std::string(kind.exact_nearest ? "round_prefer_ceil" : "floor")});
  } else {
    a.push_back({"coordinate_transformation_mode", std::string(align_corners ? "align_corners" : "half_pixel")});
    if (kind.mode == "cubic") a.push_back({"cubic_coeff_a", -0.75});  // PyTorch's bicubic A
  }
  return a;
}

// The scale factors of the spatial dims when all are given and static, else none.
std::optional<std::vector<double>> static_scales(Converter& cx, const std::vector<const Value*>& given) {
  std::vector<double> scales;
  for (const Value* v : given) {
    if (cx.is_none(v) || !cx.is_static(v)) return std::nullopt;
    scales.push_back(cx.static_double(v, "a scale factor"));
  }
  return scales;
}

// upsample_*(x, output_size, [align_corners,] scale_factors) (the .vec form
// F.interpolate records) or upsample_*(x, output_size, [align_corners,]
// scale per spatial dim). Given scale factors map the coordinates, as in
// PyTorch; a size alone maps them by size ratio, which Resize's sizes do too.
void resize(Converter& cx, const Node* n, const Interpolation& kind) {
  const int64_t rank = cx.rank(n->input(0));
  const size_t spatial = static_cast<size_t>(rank - 2);
  const bool vec = n->schema().overload_name() == "vec";
  size_t next = 2;
  const bool align_corners = kind.takes_align_corners && cx.example(n->input(next++)).toBool();
  std::vector<const Value*> scale_inputs;
  std::optional<std::vector<double>> scales;
  if (vec) {
    const Value* given = n->input(next);
    if (!cx.is_none(given)) {
      if (!cx.is_static(given)) cx.fail(n, "scale factors computed from the inputs have no static ONNX form");
      scales.emplace();
      for (const auto& s : cx.example(given).toListRef()) scales->push_back(s.toDouble());
    }
  } else {
    for (size_t d = 0; d < spatial; ++d) scale_inputs.push_back(n->input(next + d));
    scales = static_scales(cx, scale_inputs);
  }
  const std::string x = cx.tensor(n->input(0));
  const Attributes attributes = mapping(kind, align_corners);
  if (scales && scales->size() == spatial) {
    std::vector<float> all(2, 1.0f);
    for (double s : *scales) all.push_back(static_cast<float>(s));
    const std::string factors = cx.constant(at::tensor(all, at::kFloat), "scales");
    cx.set(n->output(0), cx.b.node1("Resize", {x, "", factors}, attributes, cx.stem(n)));
    return;
  }
  if (cx.is_none(n->input(1))) cx.fail(n, "neither an output size nor scale factors for every spatial dim");
  const std::string sizes =
      cx.b.node1("Concat", {slice1d(cx, cx.shape_of(x), 0, 2), cx.int64_list(n->input(1))}, {{"axis", int64_t{0}}});
  cx.set(n->output(0), cx.b.node1("Resize", {x, "", "", sizes}, attributes, cx.stem(n)));
}

}  // namespace

void add_resize_ops(std::map<std::string, OpHandler>& t) {
  const std::vector<std::pair<std::string, Interpolation>> ops = {
      {"aten::upsample_nearest1d", {"nearest"}},
      {"aten::upsample_nearest2d", {"nearest"}},
      {"aten::upsample_nearest3d", {"nearest"}},
      {"aten::_upsample_nearest_exact1d", {"nearest", true}},
      {"aten::_upsample_nearest_exact2d", {"nearest", true}},
      {"aten::_upsample_nearest_exact3d", {"nearest", true}},
      {"aten::upsample_linear1d", {"linear", false, true}},
      {"aten::upsample_bilinear2d", {"linear", false, true}},
      {"aten::upsample_trilinear3d", {"linear", false, true}},
      {"aten::upsample_bicubic2d", {"cubic", false, true}},
  };
  for (const auto& [op, kind] : ops) t[op] = [kind = kind](Converter& cx, Node* n) { resize(cx, n, kind); };
}

}  // namespace qforge::onnx_export
