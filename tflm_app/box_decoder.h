// Box decoding of an anchor-based (YOLO-style) detector's int8 output, with class-wise greedy NMS, on the device.
//
// Plain C++, no TFLM, no heap: the rules of tinyvision.detection.BoxCoding.decode in Python, which
// tests/test_box_detector.py checks bit for bit on the same int8 outputs:
// - the output is rows x cols x (anchors * (5 + classes)) int8 (NHWC, one image), per anchor the
//   sigmoid scores s_x, s_y, s_w, s_h, s_obj and one per class, each dequantized as
//   float(q - zero_point) * scale;
// - the slot of row i, column j, anchor (a_w, a_h) is the box of centre ((j, i) + 2 s_xy - 0.5) * stride
//   and size (a_w, a_h) * (2 s_wh)^2 pixels, clipped to the image; its class is the first of the best
//   class score, its score s_obj times that class score (all in float, in that order of operations);
// - slots scoring >= score_threshold are candidates; the kMaxBoxCandidates best (ties: raster order of
//   row, column, anchor) go through greedy NMS by descending score: a candidate is dropped when its IoU
//   (in double) with a kept box of its class exceeds iou_threshold; at most max_detections are kept.
#ifndef TINYVISION_BOX_DECODER_H_
#define TINYVISION_BOX_DECODER_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyvision {

// Candidates NMS considers (a stack array of this many 24-byte entries) and the sketch's detection list.
constexpr uint32_t kMaxBoxCandidates = 64;
constexpr uint32_t kMaxBoxDetections = 16;

struct BoxDecoderConfig {
  uint32_t rows;
  uint32_t cols;
  uint32_t anchors;
  uint32_t classes;
  const float* anchor_sizes;  // anchors x (w, h) in input pixels
  float stride;               // input pixels per cell
  float image_width;          // boxes are clipped to [0, image_width] x [0, image_height]
  float image_height;
  float scale;                // the int8 output's quantization
  int32_t zero_point;
  float score_threshold;
  double iou_threshold;
};

struct BoxDetection {
  float x0, y0, x1, y1;  // pixels, x1 / y1 exclusive edges
  float score;           // objectness * class score
  uint16_t cls;          // object class
};

// Writes up to max_detections detections of `output` (rows * cols * anchors * (5 + classes) values) to
// `out` by descending score and returns how many; 0 when the arguments are invalid (null pointers, no
// anchors or classes, a size that does not match, a non-positive scale).
uint32_t DecodeBoxes(const int8_t* output, size_t size, const BoxDecoderConfig& config, BoxDetection* out,
                     uint32_t max_detections);

}  // namespace tinyvision

#endif  // TINYVISION_BOX_DECODER_H_
