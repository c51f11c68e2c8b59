// Host check of the device's centroid decoder against Python (tests/test_detection.py):
//
//   centroid_check HEATMAPS COUNT ROWS COLS CHANNELS THRESHOLD MAX_DETECTIONS
//   centroid_check --threshold PROBABILITY SCALE ZERO_POINT
//
// The first form reads COUNT int8 heatmaps of ROWS x COLS x CHANNELS from the file HEATMAPS and
// prints, per heatmap, "image <i> <n>" and then one "<class> <x> <y> <score>" line per detection
// (DecodeCentroids with the int8 THRESHOLD). The second prints QuantizeThreshold's int8 value.
#include <stdio.h>
#include <stdlib.h>

#include <string_view>
#include <vector>

#include "../centroid_decoder.h"

using namespace tinyvision;

int main(int argc, char** argv) {
  if (argc == 5 && std::string_view(argv[1]) == "--threshold") {
    printf("%d\n", QuantizeThreshold(strtof(argv[2], nullptr), strtof(argv[3], nullptr), atoi(argv[4])));
    return 0;
  }
  if (argc != 8) {
    fprintf(stderr, "usage: centroid_check HEATMAPS COUNT ROWS COLS CHANNELS THRESHOLD MAX_DETECTIONS\n");
    return 2;
  }
  const uint32_t count = uint32_t(atoi(argv[2])), rows = uint32_t(atoi(argv[3])), cols = uint32_t(atoi(argv[4]));
  const uint32_t channels = uint32_t(atoi(argv[5])), max_detections = uint32_t(atoi(argv[7]));
  const int8_t threshold = int8_t(atoi(argv[6]));
  const size_t size = size_t(rows) * cols * channels;
  std::vector<int8_t> heatmaps(size * count);
  FILE* f = fopen(argv[1], "rb");
  if (f == nullptr || fread(heatmaps.data(), 1, heatmaps.size(), f) != heatmaps.size()) return 3;
  fclose(f);
  std::vector<CentroidDetection> found(max_detections + 1);
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t n = DecodeCentroids(heatmaps.data() + i * size, size, rows, cols, channels, threshold,
                                       found.data(), max_detections);
    printf("image %u %u\n", i, n);
    for (uint32_t j = 0; j < n; ++j) printf("%u %u %u %d\n", found[j].cls, found[j].x, found[j].y, found[j].score);
  }
  // Invalid arguments give no detections rather than reading out of bounds.
  if (DecodeCentroids(heatmaps.data(), size - 1, rows, cols, channels, threshold, found.data(), max_detections) ||
      DecodeCentroids(heatmaps.data(), size, rows, cols, 1, threshold, found.data(), max_detections)) {
    fprintf(stderr, "DecodeCentroids accepted invalid arguments\n");
    return 1;
  }
  return 0;
}
