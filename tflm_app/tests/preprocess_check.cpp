// Host check of the camera preprocessing against Python (tests/test_tflm_app.py):
//
//   preprocess_check FRAME WIDTH HEIGHT FORMAT OUT_H OUT_W OUT_C SCALE ZERO_POINT MEAN STD OUT
//
// FORMAT: 0 RGB888, 1 RGB565 big-endian, 2 RGB565 little-endian, 3 grey. Reads
// the raw frame, builds the pixel LUT, centre-crops to the output aspect ratio
// and reads the whole model image through MakeFrameImageSource; writes OUT
// (OUT_H x OUT_W x OUT_C int8) followed by the 256-entry LUT.
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "../tinyvision_runtime.h"

using namespace tinyvision;

int main(int argc, char** argv) {
  if (argc != 13) {
    fprintf(stderr, "usage: preprocess_check FRAME WIDTH HEIGHT FORMAT OUT_H OUT_W OUT_C SCALE ZP MEAN STD OUT\n");
    return 2;
  }
  FILE* f = fopen(argv[1], "rb");
  if (f == nullptr) return 3;
  std::vector<uint8_t> frame;
  int ch;
  while ((ch = fgetc(f)) != EOF) frame.push_back(uint8_t(ch));
  fclose(f);
  const uint32_t width = uint32_t(atoi(argv[2])), height = uint32_t(atoi(argv[3]));
  const Shape3 out = {uint32_t(atoi(argv[5])), uint32_t(atoi(argv[6])), uint32_t(atoi(argv[7]))};
  const Quant quant = {strtof(argv[8], nullptr), atoi(argv[9])};
  int8_t lut[256];
  Status s = BuildPixelLut(quant, strtof(argv[10], nullptr), strtof(argv[11], nullptr), lut);
  if (s != Status::kOk) {
    fprintf(stderr, "BuildPixelLut: %s\n", StatusString(s));
    return 1;
  }
  FrameImage image = {frame.data(), frame.size(), width, height, PixelFormat(atoi(argv[4])),
                      CenterCrop(width, height, out.w, out.h), lut, out};
  ImageSource source;
  s = MakeFrameImageSource(&image, &source);
  std::vector<int8_t> pixels(size_t(out.h) * out.w * out.c);
  if (s == Status::kOk) s = ReadImage(source, pixels.data(), pixels.size());
  if (s != Status::kOk) {
    fprintf(stderr, "preprocess: %s\n", StatusString(s));
    return 1;
  }
  FILE* o = fopen(argv[12], "wb");
  if (o == nullptr) return 3;
  const bool ok = fwrite(pixels.data(), 1, pixels.size(), o) == pixels.size() && fwrite(lut, 1, 256, o) == 256;
  return fclose(o) == 0 && ok ? 0 : 3;
}
