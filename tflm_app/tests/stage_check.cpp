// Host check of an exported sketch's plain-C++ part against Python
// (tests/test_tflm_app.py). Built from the sketch folder: its plan_data.cpp,
// model arrays and test_image.cpp with tinyvision_runtime.cpp.
//
//   stage_check DIR
//
// reads DIR/image.bin (the int8 H x W x C image) and DIR/tile_<i>.bin (patch
// i's model output, written by Python) and runs the plan's patches in order,
// as the device does, in an arena of plan.arena.size bytes: each stage's
// windows come from StageSource (its source, PatchSource: the image, or an
// earlier stage's buffer this program assembled in the arena), and each tile is placed into
// its stage's section of the arena. Writes
//   DIR/window_<i>.bin  what CopyWindow put in patch i's model input
//   DIR/stage_<k>.bin   stage k's buffer (Hs x Ws x Cs) each time a fill of it is complete (FillCompleteAt:
//                       before its first reader; once per stage in a grouped plan, the last fill's in the end)
//   DIR/model_<m>.bin   model m's flatbuffer as the plan points at it
//   DIR/test_image.bin  kTinyVisionTestImage
//   DIR/arena.txt       "<interpreters> <temp_reserve> <interpreter slots> <arena size> <section offsets>",
//                       then one line per stage: "<h> <w> <c> <scale> <zero point> <offset> <size>"
//   DIR/outputs.txt     one line per model: its output shapes in output order, "<d0>x<d1>x... <d0>x..."
// The arena and every window have guard bytes around them, and no arena byte
// outside the stages' h * w * c bytes may change; any failure exits non-zero.
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "plan_data.h"
#include "test_image.h"
#include "tinyvision_runtime.h"

using namespace tinyvision;

namespace {

constexpr size_t kGuard = 64;
constexpr int8_t kGuardByte = int8_t(0xE7);
constexpr int8_t kUnplaced = int8_t(0x77);  // arena bytes no patch wrote keep this

bool ReadFile(const std::string& path, std::vector<int8_t>* out) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  out->clear();
  int8_t buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), f)) > 0) out->insert(out->end(), buffer, buffer + n);
  fclose(f);
  return true;
}

bool WriteFile(const std::string& path, const void* data, size_t size) {
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = fwrite(data, 1, size, f) == size;
  return fclose(f) == 0 && ok;
}

std::vector<int8_t> Guarded(size_t size, int8_t fill) {
  std::vector<int8_t> v(size + 2 * kGuard, kGuardByte);
  memset(v.data() + kGuard, fill, size);
  return v;
}

bool GuardsIntact(const std::vector<int8_t>& v) {
  for (size_t i = 0; i < kGuard; ++i) {
    if (v[i] != kGuardByte || v[v.size() - 1 - i] != kGuardByte) return false;
  }
  return true;
}

size_t Bytes(const Shape3& s) { return size_t(s.h) * s.w * s.c; }

int Fail(const char* what, Status s, int index) {
  fprintf(stderr, "stage_check: %s: %s (index %d)\n", what, StatusString(s), index);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: stage_check DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const Plan& plan = kTinyVisionPlan;
  int32_t where = -1;
  Status s = ValidatePlan(plan, &where);
  if (s != Status::kOk) return Fail("ValidatePlan", s, where);

  std::vector<int8_t> image;
  if (!ReadFile(dir + "/image.bin", &image)) return Fail("cannot read image.bin", Status::kNullArgument, -1);
  ArrayImage array = {image.data(), image.size(), plan.image};
  ImageSource image_source;
  s = MakeArrayImageSource(&array, &image_source);
  if (s != Status::kOk) return Fail("MakeArrayImageSource", s, -1);

  std::vector<int8_t> arena_bytes = Guarded(plan.arena.size, kUnplaced);
  int8_t* arena = arena_bytes.data() + kGuard;
  ArrayImage view;
  ImageSource source;
  // Stage k's buffer as its reader (a patch whose source it is, or the tail) sees it.
  const auto write_stage = [&](uint16_t k) {
    const std::string name = dir + "/stage_" + std::to_string(k) + ".bin";
    return WriteFile(name, arena + plan.stages[k].section.offset, Bytes(plan.stages[k].shape));
  };
  for (uint16_t i = 0; i < plan.num_patches; ++i) {
    const PatchInfo& p = plan.patches[i];
    const StageInfo& stage = plan.stages[p.stage];
    const int32_t from = PatchSource(p);
    if (from >= 0 && FillCompleteAt(plan, uint16_t(from), i) && !write_stage(uint16_t(from))) return 3;
    if (i == 0 || from != PatchSource(plan.patches[i - 1])) {
      s = StageSource(plan, from, image_source, arena, plan.arena.size, &view, &source);
      if (s != Status::kOk) return Fail("StageSource", s, i);
    }
    const Dims& in = plan.models[p.model].input;
    const size_t in_bytes = size_t(in.d[0]) * in.d[1] * in.d[2];
    std::vector<int8_t> window = Guarded(in_bytes, 0);
    s = CopyWindow(source, p.window, window.data() + kGuard, in_bytes);
    if (s != Status::kOk) return Fail("CopyWindow", s, i);
    if (!GuardsIntact(window)) return Fail("CopyWindow wrote outside the model input", Status::kOk, i);
    if (!WriteFile(dir + "/window_" + std::to_string(i) + ".bin", window.data() + kGuard, in_bytes)) return 3;

    std::vector<int8_t> tile;
    if (!ReadFile(dir + "/tile_" + std::to_string(i) + ".bin", &tile)) return Fail("no tile", Status::kOk, i);
    s = PlaceOutput(tile.data(), tile.size(), p.output, stage.shape, arena + stage.section.offset, stage.section.size);
    if (s != Status::kOk) return Fail("PlaceOutput", s, i);
    if (!GuardsIntact(arena_bytes)) return Fail("PlaceOutput wrote outside the arena", Status::kOk, i);
  }
  if (plan.num_stages > 0 && !write_stage(uint16_t(plan.num_stages - 1))) return 3;  // what the tail reads
  for (uint32_t b = 0; b < plan.arena.size; ++b) {
    bool in_stage = false;
    for (uint16_t k = 0; k < plan.num_stages; ++k) {
      const StageInfo& stage = plan.stages[k];
      in_stage = in_stage || (b >= stage.section.offset && b - stage.section.offset < Bytes(stage.shape));
    }
    if (!in_stage && arena[b] != kUnplaced) return Fail("a patch wrote outside the stage buffers", Status::kOk, -1);
  }
  for (uint16_t m = 0; m < plan.num_models; ++m) {
    const ModelInfo& model = plan.models[m];
    if (!WriteFile(dir + "/model_" + std::to_string(m) + ".bin", model.data, model.data_size)) return 3;
  }
  if (!WriteFile(dir + "/test_image.bin", kTinyVisionTestImage, kTinyVisionTestImageSize)) return 3;
  std::string arena_txt = std::to_string(unsigned(plan.arena.interpreters)) + " " +
                          std::to_string(plan.arena.temp_reserve) + " " +
                          std::to_string(kTinyVisionNumInterpreterSlots) + " " + std::to_string(kTinyVisionArenaSize);
  for (uint16_t i = 0; i < plan.arena.num_persistent; ++i) {
    arena_txt += " " + std::to_string(plan.arena.persistent[i].section.offset);
  }
  for (uint16_t k = 0; k < plan.num_stages; ++k) {
    const StageInfo& stage = plan.stages[k];
    char line[160];
    snprintf(line, sizeof(line), "\n%u %u %u %.9g %d %u %u", unsigned(stage.shape.h), unsigned(stage.shape.w),
             unsigned(stage.shape.c), double(stage.quant.scale), int(stage.quant.zero_point),
             unsigned(stage.section.offset), unsigned(stage.section.size));
    arena_txt += line;
  }
  if (!WriteFile(dir + "/arena.txt", arena_txt.data(), arena_txt.size())) return 3;
  std::string outputs_txt;
  for (uint16_t m = 0; m < plan.num_models; ++m) {
    const ModelInfo& model = plan.models[m];
    for (uint16_t i = 0; i < model.num_outputs; ++i) {
      for (uint8_t d = 0; d < model.outputs[i].rank; ++d) {
        outputs_txt += (d > 0 ? "x" : i > 0 ? " " : "") + std::to_string(model.outputs[i].d[d]);
      }
    }
    outputs_txt += "\n";
  }
  if (!WriteFile(dir + "/outputs.txt", outputs_txt.data(), outputs_txt.size())) return 3;
  printf("stage_check: %u patches placed in %u stages\n", unsigned(plan.num_patches), unsigned(plan.num_stages));
  return 0;
}
