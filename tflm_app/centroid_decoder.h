// Centroid decoding of an int8 per-cell class heatmap (FOMO-style detectors), on the device.
//
// Plain C++, no TFLM, no heap: the same rules as tinyvision.detection.decode_centroids in Python,
// which tests/test_detection.py checks bit for bit on the same int8 heatmaps:
// - the heatmap is rows x cols x channels int8 (NHWC, one image), channel 0 the background
//   (never decoded), channel k >= 1 object class k - 1;
// - cell (y, x) of channel k is a detection when its value is >= threshold and it is a local maximum
//   of channel k over its 8 neighbours: strictly greater than the neighbours before it in raster
//   order, greater or equal to those after it (a plateau gives one detection, at its first cell);
// - detections in raster order of the cells, classes in channel order within a cell; at most
//   max_detections are written (the first ones in that order).
#ifndef TINYVISION_CENTROID_DECODER_H_
#define TINYVISION_CENTROID_DECODER_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyvision {

// Fixed capacity of the sketch's detection list (a 20 x 20 grid of 3 classes rarely holds more peaks).
constexpr uint32_t kMaxCentroidDetections = 16;

struct CentroidDetection {
  uint16_t cls;  // object class: heatmap channel - 1
  uint16_t x;    // cell column
  uint16_t y;    // cell row
  int8_t score;  // the heatmap value (dequantize with the output's scale and zero point)
};

// Writes up to max_detections detections of `heatmap` (rows * cols * channels values) to `out` and
// returns how many; 0 when the arguments are invalid (null pointers, channels < 2, a size that
// does not match rows * cols * channels).
uint32_t DecodeCentroids(const int8_t* heatmap, size_t size, uint32_t rows, uint32_t cols, uint32_t channels,
                         int8_t threshold, CentroidDetection* out, uint32_t max_detections);

// The int8 threshold for a probability `threshold` of values scale * (q - zero_point): the smallest
// q whose value is >= threshold, saturated to int8 (tinyvision.detection.quantize_threshold).
int8_t QuantizeThreshold(float threshold, float scale, int32_t zero_point);

}  // namespace tinyvision

#endif  // TINYVISION_CENTROID_DECODER_H_
