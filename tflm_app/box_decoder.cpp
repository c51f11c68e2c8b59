#include "box_decoder.h"

namespace tinyvision {

namespace {

constexpr uint32_t kBoxFields = 5;  // x, y, w, h, objectness; the class scores follow

float Clip(float v, float hi) { return v < 0.0f ? 0.0f : (v > hi ? hi : v); }

double Area(const BoxDetection& b) {
  const double w = double(b.x1) - double(b.x0), h = double(b.y1) - double(b.y0);
  return (w > 0.0 ? w : 0.0) * (h > 0.0 ? h : 0.0);
}

// box_metrics.box_iou's expression: intersection / (area(a) + area(b) - intersection), 0 for an empty union.
double Iou(const BoxDetection& a, const BoxDetection& b) {
  const double w = (a.x1 < b.x1 ? double(a.x1) : double(b.x1)) - (a.x0 > b.x0 ? double(a.x0) : double(b.x0));
  const double h = (a.y1 < b.y1 ? double(a.y1) : double(b.y1)) - (a.y0 > b.y0 ? double(a.y0) : double(b.y0));
  const double inter = (w > 0.0 ? w : 0.0) * (h > 0.0 ? h : 0.0);
  const double uni = Area(a) + Area(b) - inter;
  return uni > 0.0 ? inter / uni : 0.0;
}

// One slot's box, class and score (the float operations of BoxCoding._boxes and decode, in their order).
BoxDetection DecodeSlot(const int8_t* q, const BoxDecoderConfig& c, uint32_t row, uint32_t col, uint32_t anchor) {
  float p[kBoxFields];
  for (uint32_t f = 0; f < kBoxFields; ++f) p[f] = float(int32_t(q[f]) - c.zero_point) * c.scale;
  uint32_t best = 0;
  float best_score = float(int32_t(q[kBoxFields]) - c.zero_point) * c.scale;
  for (uint32_t k = 1; k < c.classes; ++k) {
    const float s = float(int32_t(q[kBoxFields + k]) - c.zero_point) * c.scale;
    if (s > best_score) best = k, best_score = s;
  }
  const float cx = (float(col) + 2.0f * p[0] - 0.5f) * c.stride;
  const float cy = (float(row) + 2.0f * p[1] - 0.5f) * c.stride;
  const float tw = 2.0f * p[2], th = 2.0f * p[3];
  const float half_w = 0.5f * (c.anchor_sizes[2 * anchor] * (tw * tw));
  const float half_h = 0.5f * (c.anchor_sizes[2 * anchor + 1] * (th * th));
  return {Clip(cx - half_w, c.image_width), Clip(cy - half_h, c.image_height), Clip(cx + half_w, c.image_width),
          Clip(cy + half_h, c.image_height), p[4] * best_score, uint16_t(best)};
}

// Inserts `d` into `list` (count entries, by descending score, equal scores in arrival order), keeping the
// best `capacity`; returns the new count.
uint32_t InsertByScore(BoxDetection* list, uint32_t count, uint32_t capacity, const BoxDetection& d) {
  uint32_t at = count;
  while (at > 0 && list[at - 1].score < d.score) --at;
  if (at == capacity) return count;
  const uint32_t end = count < capacity ? count : capacity - 1;
  for (uint32_t i = end; i > at; --i) list[i] = list[i - 1];
  list[at] = d;
  return end + 1;
}

}  // namespace

uint32_t DecodeBoxes(const int8_t* output, size_t size, const BoxDecoderConfig& config, BoxDetection* out,
                     uint32_t max_detections) {
  const BoxDecoderConfig& c = config;
  const uint32_t fields = kBoxFields + c.classes;
  if (output == nullptr || out == nullptr || c.anchor_sizes == nullptr || c.anchors == 0 || c.classes == 0 ||
      !(c.scale > 0.0f) || size != size_t(c.rows) * c.cols * c.anchors * fields) {
    return 0;
  }
  BoxDetection candidates[kMaxBoxCandidates];
  uint32_t count = 0;
  for (uint32_t row = 0; row < c.rows; ++row) {
    for (uint32_t col = 0; col < c.cols; ++col) {
      for (uint32_t a = 0; a < c.anchors; ++a) {
        const int8_t* slot = output + ((size_t(row) * c.cols + col) * c.anchors + a) * fields;
        const BoxDetection d = DecodeSlot(slot, c, row, col, a);
        if (d.score >= c.score_threshold) count = InsertByScore(candidates, count, kMaxBoxCandidates, d);
      }
    }
  }
  uint32_t kept = 0;
  for (uint32_t i = 0; i < count && kept < max_detections; ++i) {
    bool suppressed = false;
    for (uint32_t k = 0; k < kept && !suppressed; ++k) {
      suppressed = out[k].cls == candidates[i].cls && Iou(out[k], candidates[i]) > c.iou_threshold;
    }
    if (!suppressed) out[kept++] = candidates[i];
  }
  return kept;
}

}  // namespace tinyvision
