#include "centroid_decoder.h"

#include <math.h>

namespace tinyvision {

namespace {

// Neighbour offsets (dy, dx): the four before a cell in raster order, then the four after it.
constexpr int kOffsets[8][2] = {{-1, -1}, {-1, 0}, {-1, 1}, {0, -1}, {0, 1}, {1, -1}, {1, 0}, {1, 1}};
constexpr int kBefore = 4;

bool IsPeak(const int8_t* heatmap, uint32_t rows, uint32_t cols, uint32_t channels, uint32_t y, uint32_t x,
            uint32_t k) {
  const int8_t value = heatmap[(size_t(y) * cols + x) * channels + k];
  for (int i = 0; i < 8; ++i) {
    const int64_t ny = int64_t(y) + kOffsets[i][0];
    const int64_t nx = int64_t(x) + kOffsets[i][1];
    if (ny < 0 || nx < 0 || ny >= int64_t(rows) || nx >= int64_t(cols)) continue;
    const int8_t other = heatmap[(size_t(ny) * cols + size_t(nx)) * channels + k];
    if (i < kBefore ? value <= other : value < other) return false;
  }
  return true;
}

}  // namespace

uint32_t DecodeCentroids(const int8_t* heatmap, size_t size, uint32_t rows, uint32_t cols, uint32_t channels,
                         int8_t threshold, CentroidDetection* out, uint32_t max_detections) {
  if (heatmap == nullptr || out == nullptr || channels < 2 || size != size_t(rows) * cols * channels) return 0;
  uint32_t count = 0;
  for (uint32_t y = 0; y < rows; ++y) {
    for (uint32_t x = 0; x < cols; ++x) {
      for (uint32_t k = 1; k < channels; ++k) {
        const int8_t value = heatmap[(size_t(y) * cols + x) * channels + k];
        if (value < threshold || !IsPeak(heatmap, rows, cols, channels, y, x, k)) continue;
        if (count == max_detections) return count;
        out[count++] = {uint16_t(k - 1), uint16_t(x), uint16_t(y), value};
      }
    }
  }
  return count;
}

int8_t QuantizeThreshold(float threshold, float scale, int32_t zero_point) {
  // In double, with the same tolerance as the Python side, so both round a threshold that lands
  // on a quantization step the same way.
  const double q = ceil(double(threshold) / double(scale) - 1e-9) + zero_point;
  return int8_t(q < -128 ? -128 : q > 127 ? 127 : q);
}

}  // namespace tinyvision
