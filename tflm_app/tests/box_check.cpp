// Host check of the device's box decoder against Python (tests/test_box_detector.py):
//
//   box_check OUTPUTS COUNT ROWS COLS CLASSES STRIDE SCALE ZERO_POINT SCORE_THRESHOLD IOU_THRESHOLD
//             MAX_DETECTIONS ANCHOR_W ANCHOR_H [ANCHOR_W ANCHOR_H ...]
//
// Reads COUNT int8 outputs of ROWS x COLS x anchors * (5 + CLASSES) from the file OUTPUTS and prints,
// per output, "image <i> <n>" and then one "<class> <x0> <y0> <x1> <y1> <score>" line per detection,
// the floats in C's exact hexadecimal form (%a). The image is ROWS * STRIDE x COLS * STRIDE pixels.
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "../box_decoder.h"

using namespace tinyvision;

int main(int argc, char** argv) {
  if (argc < 14 || (argc - 12) % 2 != 0) {
    fprintf(stderr, "usage: box_check OUTPUTS COUNT ROWS COLS CLASSES STRIDE SCALE ZERO_POINT SCORE_THRESHOLD "
                    "IOU_THRESHOLD MAX_DETECTIONS ANCHOR_W ANCHOR_H ...\n");
    return 2;
  }
  std::vector<float> anchors;
  for (int i = 12; i < argc; ++i) anchors.push_back(strtof(argv[i], nullptr));
  BoxDecoderConfig config;
  config.rows = uint32_t(atoi(argv[3]));
  config.cols = uint32_t(atoi(argv[4]));
  config.anchors = uint32_t(anchors.size() / 2);
  config.classes = uint32_t(atoi(argv[5]));
  config.anchor_sizes = anchors.data();
  config.stride = strtof(argv[6], nullptr);
  config.image_width = float(config.cols) * config.stride;
  config.image_height = float(config.rows) * config.stride;
  config.scale = strtof(argv[7], nullptr);
  config.zero_point = atoi(argv[8]);
  config.score_threshold = strtof(argv[9], nullptr);
  config.iou_threshold = strtod(argv[10], nullptr);
  const uint32_t count = uint32_t(atoi(argv[2])), max_detections = uint32_t(atoi(argv[11]));
  const size_t size = size_t(config.rows) * config.cols * config.anchors * (5 + config.classes);
  std::vector<int8_t> outputs(size * count);
  FILE* f = fopen(argv[1], "rb");
  if (f == nullptr || fread(outputs.data(), 1, outputs.size(), f) != outputs.size()) return 3;
  fclose(f);
  std::vector<BoxDetection> found(max_detections + 1);
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t n = DecodeBoxes(outputs.data() + i * size, size, config, found.data(), max_detections);
    printf("image %u %u\n", i, n);
    for (uint32_t j = 0; j < n; ++j) {
      const BoxDetection& d = found[j];
      printf("%u %a %a %a %a %a\n", d.cls, double(d.x0), double(d.y0), double(d.x1), double(d.y1), double(d.score));
    }
  }
  // Invalid arguments give no detections rather than reading out of bounds.
  BoxDecoderConfig no_classes = config;
  no_classes.classes = 0;
  if (DecodeBoxes(outputs.data(), size - 1, config, found.data(), max_detections) ||
      DecodeBoxes(outputs.data(), size, no_classes, found.data(), max_detections)) {
    fprintf(stderr, "DecodeBoxes accepted invalid arguments\n");
    return 1;
  }
  return 0;
}
