// Host test of tinyvision_runtime: every out-of-range plan, window, box and
// buffer returns its Status, and no call writes outside the buffers it is
// given. Buffers carry guard bytes on both sides, and the test is built with
// -fsanitize=address,undefined (tests/test_tflm_app.py), so a stray read or
// write fails loudly. Exits 0 and prints "bounds_test: N checks passed".
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <utility>
#include <vector>

#include "../tinyvision_runtime.h"

using namespace tinyvision;

static int g_checks = 0;
static int g_failures = 0;

#define CHECK(cond)                                                         \
  do {                                                                      \
    ++g_checks;                                                             \
    if (!(cond)) {                                                          \
      ++g_failures;                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                       \
  } while (0)

#define CHECK_STATUS(expr, want)                                                                          \
  do {                                                                                                    \
    const Status got_ = (expr);                                                                           \
    ++g_checks;                                                                                           \
    if (got_ != (want)) {                                                                                 \
      ++g_failures;                                                                                       \
      fprintf(stderr, "%s:%d: %s returned '%s', expected '%s'\n", __FILE__, __LINE__, #expr,              \
              StatusString(got_), StatusString(want));                                                    \
    }                                                                                                     \
  } while (0)

// A heap buffer of `size` usable bytes between two guard zones.
class Guarded {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr int8_t kGuardByte = int8_t(0xE7);

  explicit Guarded(size_t size, int8_t fill = 0x11) : bytes_(size + 2 * kGuard, kGuardByte), size_(size) {
    memset(data(), fill, size);
  }
  int8_t* data() { return bytes_.data() + kGuard; }
  const int8_t* data() const { return bytes_.data() + kGuard; }
  size_t size() const { return size_; }
  bool GuardsIntact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (bytes_[i] != kGuardByte || bytes_[kGuard + size_ + i] != kGuardByte) return false;
    }
    return true;
  }
  bool All(int8_t value) const {
    for (size_t i = 0; i < size_; ++i) {
      if (data()[i] != value) return false;
    }
    return true;
  }

 private:
  std::vector<int8_t> bytes_;
  size_t size_;
};

// ---------------------------------------------------------------------------
// A valid one-stage plan: a 20x20x3 image split into two 12-row windows (one
// shared patch model, output 4x8x4 each) filling an 8x8x4 stage at arena
// offset 1024; a 10-class tail. The arrays have room for TwoStages, and for a
// tail with one output too many. outputs[m] holds model m's output shapes.
struct PlanFixture {
  Dims outputs[4][kMaxOutputs + 1];
  ModelInfo models[4];
  PatchInfo patches[4];
  StageInfo stages[3];
  PersistentSection persistent[3];
  Plan plan;

  PlanFixture() {
    outputs[0][0] = {3, {4, 8, 4, 0}};
    outputs[1][0] = {3, {1, 1, 10, 0}};
    models[0] = {"patch", nullptr, 0, ModelRole::kPatch, {3, {12, 20, 3, 0}}, outputs[0], 1, 900, 1000, false};
    models[1] = {"tail", nullptr, 0, ModelRole::kTail, {3, {8, 8, 4, 0}}, outputs[1], 1, 900, 1000, false};
    patches[0] = {0, 0, {0, 0, 20, 12}, {0, 0, 0, 8, 4, 4}};
    patches[1] = {0, 0, {0, 8, 20, 12}, {0, 4, 0, 8, 4, 4}};
    stages[0] = {{8, 8, 4}, {0.02f, -100}, {1024, 256}};
    persistent[0] = {0, {2048, 1024}};
    persistent[1] = {1, {3072, 1024}};
    plan.image = {20, 20, 3};
    plan.image_quant = {0.0078125f, -1};
    plan.stages = stages;
    plan.num_stages = 1;
    plan.models = models;
    plan.num_models = 2;
    plan.patches = patches;
    plan.num_patches = 2;
    plan.tail_model = 1;
    plan.arena = {4096, {0, 2048}, persistent, 2, true, InterpreterMode::kResident, 0};
  }
  PlanFixture(const PlanFixture&) = delete;
};

// The same models in one_at_a_time mode: every persistent section starts at
// the end of shared (1024 or 512 bytes, so the arena is shared + 1024), and
// AllocateTensors may write the bottom 512 bytes of shared, below the stages.
static void OneAtATime(PlanFixture& f) {
  f.persistent[0].section = {2048, 1024};
  f.persistent[1].section = {2048, 512};
  f.persistent[2].section = {2048, 512};
  for (ModelInfo& m : f.models) m.persistent_bytes = 500;  // each fits the section it is given
  f.plan.arena.size = 3072;
  f.plan.arena.interpreters = InterpreterMode::kOneAtATime;
  f.plan.arena.temp_reserve = 512;
}

// A second stage on top of the first: model 2 runs on two 5x8 windows of the
// 8x8x4 stage-0 buffer (rows 0-4 and 3-7) and fills the two row halves of a
// 4x4x6 stage-1 buffer at arena offset 1280, which the tail reads.
static void TwoStages(PlanFixture& f) {
  f.models[1].input = {3, {4, 4, 6, 0}};
  f.outputs[2][0] = {3, {2, 4, 6, 0}};
  f.models[2] = {"patch_s1", nullptr, 0, ModelRole::kPatch, {3, {5, 8, 4, 0}}, f.outputs[2], 1, 900, 1000, false};
  f.patches[2] = {2, 1, {0, 0, 8, 5}, {0, 0, 0, 4, 2, 6}};
  f.patches[3] = {2, 1, {0, 3, 8, 5}, {0, 2, 0, 4, 2, 6}};
  f.stages[1] = {{4, 4, 6}, {0.05f, 3}, {1280, 96}};
  f.persistent[2] = {2, {4096, 1024}};
  f.plan.num_stages = 2;
  f.plan.num_models = 3;
  f.plan.num_patches = 4;
  f.plan.arena.num_persistent = 3;
  f.plan.arena.size = 5120;
}

static void TwoStagesOneAtATime(PlanFixture& f) {
  TwoStages(f);
  OneAtATime(f);
}

struct PlanCase {
  const char* name;
  void (*mutate)(PlanFixture&);
  Status want;
  int32_t where;
};

// Each case: a fresh fixture, `base` (may be null), the mutation, then
// ValidatePlan must return `want` with `where`.
// ValidatePlan(plan) must return `want` with `want_where`.
static void CheckValidation(const char* name, const Plan& plan, Status want, int32_t want_where) {
  int32_t where = 99;
  const Status got = ValidatePlan(plan, &where);
  ++g_checks;
  if (got != want || where != want_where) {
    ++g_failures;
    fprintf(stderr, "ValidatePlan(%s): '%s' at %d, expected '%s' at %d\n", name, StatusString(got), int(where),
            StatusString(want), int(want_where));
  }
}

static void CheckPlanCases(const PlanCase* cases, size_t count, void (*base)(PlanFixture&)) {
  for (size_t i = 0; i < count; ++i) {
    const PlanCase& c = cases[i];
    PlanFixture f;
    if (base != nullptr) base(f);
    c.mutate(f);
    CheckValidation(c.name, f.plan, c.want, c.where);
  }
}

static void TestValidatePlan() {
  {
    PlanFixture f;
    int32_t where = 7;
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kOk);
    CHECK(where == -1);
  }
  const PlanCase cases[] = {
      {"window past the right edge", [](PlanFixture& f) { f.patches[1].window.x = 1; }, Status::kWindowOutsideImage, 1},
      {"window past the bottom", [](PlanFixture& f) { f.patches[1].window.y = 9; }, Status::kWindowOutsideImage, 1},
      {"window x wraps 32 bits", [](PlanFixture& f) { f.patches[0].window.x = 0xFFFFFFF0u; },
       Status::kWindowOutsideImage, 0},
      {"empty window", [](PlanFixture& f) { f.patches[0].window.w = 0; }, Status::kWindowOutsideImage, 0},
      {"window smaller than the model input", [](PlanFixture& f) { f.patches[0].window.w = 19; },
       Status::kWindowShapeMismatch, 0},
      {"image channels differ from the model input", [](PlanFixture& f) { f.plan.image.c = 1; },
       Status::kWindowShapeMismatch, 0},
      {"box past the stage bottom", [](PlanFixture& f) { f.patches[1].output.y = 5; }, Status::kBoxOutsideStage, 1},
      {"boxes overlap and leave a row", [](PlanFixture& f) { f.patches[1].output.y = 3; },
       Status::kStageNotCovered, 0},
      {"boxes leave a channel", [](PlanFixture& f) {
         f.stages[0].shape.c = 5;
         f.models[1].input.d[2] = 5;
         f.stages[0].section.size = 320;
       }, Status::kStageNotCovered, 0},
      {"box channels past the stage", [](PlanFixture& f) { f.patches[0].output.c = 1; }, Status::kBoxOutsideStage, 0},
      {"box y wraps 32 bits", [](PlanFixture& f) { f.patches[0].output.y = 0xFFFFFFFFu; },
       Status::kBoxOutsideStage, 0},
      {"box differs from the model output", [](PlanFixture& f) { f.outputs[0][0].d[2] = 2; },
       Status::kBoxShapeMismatch, 0},
      {"tail input is not the stage", [](PlanFixture& f) { f.models[1].input.d[0] = 7; },
       Status::kStageShapeMismatch, 1},
      {"patch stage out of range", [](PlanFixture& f) { f.patches[1].stage = 1; }, Status::kBadStageIndex, 1},
      {"patch model unused", [](PlanFixture& f) {
         f.models[2] = f.models[0];
         f.plan.num_models = 3;
         f.persistent[2] = {2, {4096, 1024}};
       }, Status::kBadModelStage, 2},
      {"patch runs the tail model", [](PlanFixture& f) { f.patches[1].model = 1; }, Status::kWrongModelRole, 1},
      {"two tails", [](PlanFixture& f) { f.models[0].role = ModelRole::kTail; }, Status::kWrongModelRole, 0},
      {"patch model index out of range", [](PlanFixture& f) { f.patches[0].model = 5; }, Status::kBadModelIndex, 0},
      {"tail index out of range", [](PlanFixture& f) { f.plan.tail_model = 2; }, Status::kBadModelIndex, -1},
      {"persistent sections overlap", [](PlanFixture& f) { f.persistent[1].section.offset = 2560; },
       Status::kSectionsOverlap, 1},
      {"persistent section inside shared", [](PlanFixture& f) { f.persistent[0].section.offset = 1024; },
       Status::kSectionsOverlap, 0},
      {"persistent section past the arena", [](PlanFixture& f) { f.persistent[1].section.size = 1040; },
       Status::kSectionOutsideArena, 1},
      {"persistent section offset wraps 32 bits",
       [](PlanFixture& f) { f.persistent[1].section = {0xFFFFFFF0u, 0x20}; }, Status::kSectionOutsideArena, 1},
      {"empty persistent section", [](PlanFixture& f) { f.persistent[1].section.size = 0; },
       Status::kSectionOutsideArena, 1},
      {"shared past the arena", [](PlanFixture& f) { f.plan.arena.size = 2000; }, Status::kSectionOutsideArena, -1},
      {"stage outside shared", [](PlanFixture& f) { f.stages[0].section.offset = 1920; },
       Status::kStageOutsideShared, 0},
      {"stage section smaller than the stage", [](PlanFixture& f) { f.stages[0].section.size = 255; },
       Status::kStageTooSmall, 0},
      {"stage misaligned", [](PlanFixture& f) { f.stages[0].section.offset = 1032; }, Status::kMisaligned, 0},
      {"persistent misaligned", [](PlanFixture& f) { f.persistent[0].section.offset = 2056; },
       Status::kMisaligned, 0},
      {"a model without a section", [](PlanFixture& f) { f.plan.arena.num_persistent = 1; },
       Status::kMissingSection, -1},
      {"a model with two sections", [](PlanFixture& f) { f.persistent[1].model = 0; }, Status::kMissingSection, 1},
      {"section for a missing model", [](PlanFixture& f) { f.persistent[1].model = 9; }, Status::kBadModelIndex, 1},
      {"model head over shared", [](PlanFixture& f) { f.models[1].nonpersistent_bytes = 2049; },
       Status::kModelExceedsSection, 1},
      {"model head -5 written as unsigned", [](PlanFixture& f) { f.models[0].nonpersistent_bytes = uint32_t(-5); },
       Status::kModelExceedsSection, 0},
      {"model tail over its section", [](PlanFixture& f) { f.persistent[0].section.size = 992; },
       Status::kModelExceedsSection, 0},
      {"no patches", [](PlanFixture& f) { f.plan.num_patches = 0; }, Status::kBadPlan, -1},
      {"no models", [](PlanFixture& f) { f.plan.num_models = 0; }, Status::kBadPlan, -1},
      {"too many models", [](PlanFixture& f) { f.plan.num_models = kMaxModels + 1; }, Status::kBadPlan, -1},
      {"null patch list", [](PlanFixture& f) { f.plan.patches = nullptr; }, Status::kNullArgument, -1},
      {"no stages", [](PlanFixture& f) { f.plan.num_stages = 0; }, Status::kBadPlan, -1},
      {"null stage list", [](PlanFixture& f) { f.plan.stages = nullptr; }, Status::kNullArgument, -1},
      {"zero image height", [](PlanFixture& f) { f.plan.image.h = 0; }, Status::kBadShape, -1},
      {"stage volume past 32 bits", [](PlanFixture& f) { f.stages[0].shape = {65536, 65536, 4}; },
       Status::kBadShape, 0},
      {"model rank 0", [](PlanFixture& f) { f.models[0].input.rank = 0; }, Status::kBadShape, 0},
      {"model rank 5", [](PlanFixture& f) { f.outputs[1][0].rank = 5; }, Status::kBadShape, 1},
      {"zero scale", [](PlanFixture& f) { f.plan.image_quant.scale = 0.0f; }, Status::kBadQuantization, -1},
      {"negative scale", [](PlanFixture& f) { f.stages[0].quant.scale = -1.0f; }, Status::kBadQuantization, 0},
      {"NaN scale", [](PlanFixture& f) { f.stages[0].quant.scale = NAN; }, Status::kBadQuantization, 0},
      {"infinite scale", [](PlanFixture& f) { f.plan.image_quant.scale = INFINITY; }, Status::kBadQuantization, -1},
      {"zero point past int8", [](PlanFixture& f) { f.plan.image_quant.zero_point = 128; },
       Status::kBadQuantization, -1},
      {"unknown interpreter mode", [](PlanFixture& f) { f.plan.arena.interpreters = InterpreterMode(2); },
       Status::kBadPlan, -1},
      {"resident: one_at_a_time's overlapping sections", [](PlanFixture& f) {
         OneAtATime(f);
         f.plan.arena.interpreters = InterpreterMode::kResident;
       }, Status::kSectionsOverlap, 1},
      // Resident interpreters are all created before the stage is used: temp_reserve is not a constraint.
      {"resident: stage below temp_reserve is fine", [](PlanFixture& f) { f.plan.arena.temp_reserve = 2000; },
       Status::kOk, -1},
  };
  CheckPlanCases(cases, sizeof(cases) / sizeof(cases[0]), nullptr);
}

static void TestValidateOneAtATimePlan() {
  const PlanCase cases[] = {
      {"overlapping sections from the end of shared", [](PlanFixture&) {}, Status::kOk, -1},
      {"sections at different offsets above shared", [](PlanFixture& f) { f.persistent[1].section.offset = 2560; },
       Status::kOk, -1},
      {"no temp_reserve", [](PlanFixture& f) { f.plan.arena.temp_reserve = 0; }, Status::kOk, -1},
      {"stage right at temp_reserve", [](PlanFixture& f) { f.plan.arena.temp_reserve = 1024; }, Status::kOk, -1},
      // Each model's creation is checked against its CreationLimit when it is created, not here.
      {"stage below temp_reserve", [](PlanFixture& f) { f.plan.arena.temp_reserve = 1040; }, Status::kOk, -1},
      {"temp_reserve misaligned", [](PlanFixture& f) { f.plan.arena.temp_reserve = 520; }, Status::kMisaligned, -1},
      {"section below shared", [](PlanFixture& f) {
         f.plan.arena.shared = {512, 1536};
         f.persistent[1].section = {0, 512};
       }, Status::kSectionBelowShared, 1},
      {"section overlaps shared", [](PlanFixture& f) { f.persistent[1].section.offset = 2032; },
       Status::kSectionsOverlap, 1},
      {"section past the arena", [](PlanFixture& f) { f.persistent[0].section.size = 1040; },
       Status::kSectionOutsideArena, 0},
      {"a model with two sections", [](PlanFixture& f) { f.persistent[1].model = 0; }, Status::kMissingSection, 1},
      {"stage outside shared", [](PlanFixture& f) { f.stages[0].section.offset = 1920; },
       Status::kStageOutsideShared, 0},
  };
  CheckPlanCases(cases, sizeof(cases) / sizeof(cases[0]), OneAtATime);
}

static void TestValidateTwoStagePlan() {
  const PlanCase cases[] = {
      {"two stages", [](PlanFixture&) {}, Status::kOk, -1},
      {"window outside the previous stage", [](PlanFixture& f) { f.patches[3].window.y = 4; },
       Status::kWindowOutsideStage, 3},
      {"window inside the image but outside the previous stage", [](PlanFixture& f) { f.patches[2].window.x = 12; },
       Status::kWindowOutsideStage, 2},
      {"window with the image's channels, not the previous stage's",
       [](PlanFixture& f) { f.models[2].input.d[2] = 3; }, Status::kWindowShapeMismatch, 2},
      {"box outside its stage", [](PlanFixture& f) { f.patches[2].output.y = 3; }, Status::kBoxOutsideStage, 2},
      {"box inside stage 0 but outside its own stage", [](PlanFixture& f) {
         f.outputs[2][0] = {3, {2, 4, 4, 0}};
         f.patches[2].output = {0, 0, 0, 4, 2, 4};
         f.patches[3].output = {4, 0, 0, 4, 2, 4};
       }, Status::kBoxOutsideStage, 3},
      {"boxes of stage 1 overlap", [](PlanFixture& f) { f.patches[3].output.y = 1; }, Status::kStageNotCovered, 1},
      {"boxes of stage 0 leave a row", [](PlanFixture& f) {
         f.stages[0].shape.h = 9;
         f.stages[0].section.size = 288;
       }, Status::kStageNotCovered, 0},
      // Patches 1 and 2 swapped: stage 1's first patch reads stage 0 with one of its two boxes placed.
      {"stage 0 read half filled", [](PlanFixture& f) { std::swap(f.patches[1], f.patches[2]); },
       Status::kStageNotCovered, 0},
      {"stage 0 read before it is filled", [](PlanFixture& f) {  // p2 p0 p1 p3
         std::swap(f.patches[0], f.patches[2]);
         std::swap(f.patches[1], f.patches[2]);
       }, Status::kStagesOutOfOrder, 0},
      {"patch stage out of range", [](PlanFixture& f) { f.patches[3].stage = 2; }, Status::kBadStageIndex, 3},
      {"last stage without patches", [](PlanFixture& f) { f.plan.num_patches = 2; }, Status::kEmptyStage, 1},
      {"middle stage without patches", [](PlanFixture& f) {
         f.stages[2] = f.stages[1];
         f.plan.num_stages = 3;
         f.patches[2].stage = f.patches[3].stage = 2;
       }, Status::kEmptyStage, 1},
      {"first stage without patches", [](PlanFixture& f) {
         f.patches[0].stage = f.patches[1].stage = 1;
         f.patches[2].stage = f.patches[3].stage = 1;
       }, Status::kEmptyStage, 0},
      {"a model in two stages", [](PlanFixture& f) { f.patches[3].model = 0; }, Status::kBadModelStage, 0},
      {"tail input is stage 0, not the last stage", [](PlanFixture& f) { f.models[1].input = {3, {8, 8, 4, 0}}; },
       Status::kStageShapeMismatch, 1},
      {"stage 1 zero width", [](PlanFixture& f) { f.stages[1].shape.w = 0; }, Status::kBadShape, 1},
      {"stage 1 zero point past int8", [](PlanFixture& f) { f.stages[1].quant.zero_point = -129; },
       Status::kBadQuantization, 1},
      {"consecutive stages overlap", [](PlanFixture& f) { f.stages[1].section.offset = 1264; },
       Status::kStagesOverlap, 1},
      {"consecutive stages at one offset", [](PlanFixture& f) { f.stages[1].section.offset = 1024; },
       Status::kStagesOverlap, 1},
      {"stage 1 below stage 0, touching", [](PlanFixture& f) { f.stages[1].section.offset = 928; }, Status::kOk, -1},
      {"stage 1 misaligned", [](PlanFixture& f) { f.stages[1].section.offset = 1288; }, Status::kMisaligned, 1},
      {"stage 1 outside shared", [](PlanFixture& f) { f.stages[1].section.offset = 2000; },
       Status::kStageOutsideShared, 1},
      {"stage 1 section smaller than its shape", [](PlanFixture& f) { f.stages[1].section.size = 95; },
       Status::kStageTooSmall, 1},
      // In place: only the one patch of a stage k >= 1 reading all of stage k - 1 and filling all of stage k.
      {"a stage-0 model in place", [](PlanFixture& f) { f.models[0].in_place = true; }, Status::kBadInPlace, 0},
      {"a model of two patches in place", [](PlanFixture& f) { f.models[2].in_place = true; },
       Status::kBadInPlace, 2},
      {"the tail in place", [](PlanFixture& f) { f.models[1].in_place = true; }, Status::kBadInPlace, 1},
  };
  CheckPlanCases(cases, sizeof(cases) / sizeof(cases[0]), TwoStages);

  const PlanCase one_at_a_time[] = {
      {"two stages", [](PlanFixture&) {}, Status::kOk, -1},
      {"stage 1 below temp_reserve (CreationLimit lowers what creation may write)", [](PlanFixture& f) {
         f.stages[0].section.offset = 1536;
         f.stages[1].section.offset = 1024;
         f.plan.arena.temp_reserve = 1040;
       }, Status::kOk, -1},
      {"both stages right at and above temp_reserve", [](PlanFixture& f) {
         f.stages[0].section.offset = 1536;
         f.stages[1].section.offset = 1040;
         f.plan.arena.temp_reserve = 1040;
       }, Status::kOk, -1},
      {"consecutive stages overlap", [](PlanFixture& f) { f.stages[1].section.offset = 1264; },
       Status::kStagesOverlap, 1},
  };
  CheckPlanCases(one_at_a_time, sizeof(one_at_a_time) / sizeof(one_at_a_time[0]), TwoStagesOneAtATime);
}

// The tail model (index 1) with `count` outputs: a 2x2x18 grid per output
// after the fixture's 10 scores, as a detector has one output per scale.
static void TailOutputs(PlanFixture& f, uint16_t count) {
  for (uint16_t i = 1; i < count && i <= kMaxOutputs; ++i) f.outputs[1][i] = {3, {2, 2, 18, 0}};
  f.models[1].num_outputs = count;
}

// The fixture's tail alone, reading the 20x20x3 image: a whole model (no stage, no patch).
static void WholeModel(PlanFixture& f) {
  f.models[0] = f.models[1];
  f.models[0].input = {3, {20, 20, 3, 0}};
  f.models[0].outputs = f.outputs[0];
  f.outputs[0][0] = {3, {1, 1, 10, 0}};
  f.persistent[0] = {0, {2048, 1024}};
  f.plan.num_stages = 0;
  f.plan.stages = nullptr;
  f.plan.num_patches = 0;
  f.plan.patches = nullptr;
  f.plan.num_models = 1;
  f.plan.tail_model = 0;
  f.plan.arena.num_persistent = 1;
  f.plan.arena.size = 3072;
  f.plan.arena.tail_input_at_stage = false;  // a whole model's input is copied from the image
}

// Only the tail may have several outputs (up to kMaxOutputs): a patch model's
// one output fills its box of the stage buffer.
static void TestValidateOutputs() {
  const PlanCase cases[] = {
      {"a tail with two outputs", [](PlanFixture& f) { TailOutputs(f, 2); }, Status::kOk, -1},
      {"a tail with kMaxOutputs outputs", [](PlanFixture& f) { TailOutputs(f, kMaxOutputs); }, Status::kOk, -1},
      {"a tail with kMaxOutputs + 1 outputs", [](PlanFixture& f) { TailOutputs(f, kMaxOutputs + 1); },
       Status::kBadOutputs, 1},
      {"a tail without outputs", [](PlanFixture& f) { TailOutputs(f, 0); }, Status::kBadOutputs, 1},
      {"a patch model with two outputs", [](PlanFixture& f) {
         f.outputs[0][1] = {3, {4, 8, 4, 0}};
         f.models[0].num_outputs = 2;
       }, Status::kBadOutputs, 0},
      {"a patch model without outputs", [](PlanFixture& f) { f.models[0].num_outputs = 0; }, Status::kBadOutputs, 0},
      {"a tail's second output with a zero dimension", [](PlanFixture& f) {
         TailOutputs(f, 2);
         f.outputs[1][1].d[1] = 0;
       }, Status::kBadShape, 1},
      {"a tail's last output rank 5", [](PlanFixture& f) {
         TailOutputs(f, kMaxOutputs);
         f.outputs[1][kMaxOutputs - 1].rank = 5;
       }, Status::kBadShape, 1},
      {"null output list", [](PlanFixture& f) { f.models[1].outputs = nullptr; }, Status::kNullArgument, 1},
      {"a whole model", WholeModel, Status::kOk, -1},
      {"a whole model with three outputs", [](PlanFixture& f) {
         WholeModel(f);
         f.outputs[0][1] = {1, {7, 0, 0, 0}};
         f.outputs[0][2] = {4, {1, 2, 3, 4}};
         f.models[0].num_outputs = 3;
       }, Status::kOk, -1},
      {"a whole model with kMaxOutputs + 1 outputs", [](PlanFixture& f) {
         WholeModel(f);
         for (uint16_t i = 1; i <= kMaxOutputs; ++i) f.outputs[0][i] = {1, {5, 0, 0, 0}};
         f.models[0].num_outputs = kMaxOutputs + 1;
       }, Status::kBadOutputs, 0},
  };
  CheckPlanCases(cases, sizeof(cases) / sizeof(cases[0]), nullptr);
  {  // the two-output tail of a two-stage plan, one interpreter at a time
    PlanFixture f;
    TwoStagesOneAtATime(f);
    TailOutputs(f, 2);
    CHECK_STATUS(ValidatePlan(f.plan), Status::kOk);
  }
}

// one_at_a_time: creating a model may write up to temp_reserve, less where a
// stage buffer that holds data while it is created starts lower.
static void TestCreationLimit() {
  PlanFixture f;
  TwoStagesOneAtATime(f);  // stage 0 at 1024, stage 1 at 1280, temp_reserve 512; model 2 runs stage 1
  CHECK(CreationLimit(f.plan, 0) == 512 && CreationLimit(f.plan, 1) == 512 && CreationLimit(f.plan, 2) == 512);
  f.plan.arena.temp_reserve = 1200;
  CHECK(CreationLimit(f.plan, 0) == 1024);  // stage 0 holds its earlier patches' outputs
  CHECK(CreationLimit(f.plan, 2) == 1024);  // stage 1's model reads stage 0
  CHECK(CreationLimit(f.plan, 1) == 1200);  // the tail: only the last stage (at 1280) holds data
  f.stages[0].section.offset = 1536;
  f.stages[1].section.offset = 1040;
  CHECK(CreationLimit(f.plan, 0) == 1200);  // stage 1, lower, holds nothing yet
  CHECK(CreationLimit(f.plan, 2) == 1040);
  CHECK(CreationLimit(f.plan, 1) == 1040);
}

// Three stages: stage 2 may reuse stage 0's memory (only stage 1 is alive
// with it), never stage 1's.
static void TestThreeStagesReuse() {
  PlanFixture f;
  TwoStages(f);
  f.stages[2] = {{4, 4, 6}, {0.05f, 3}, {1024, 96}};  // over stage 0's buffer
  f.outputs[3][0] = {3, {4, 4, 6, 0}};
  f.models[3] = {"patch_s2", nullptr, 0, ModelRole::kPatch, {3, {4, 4, 6, 0}}, f.outputs[3], 1, 900, 1000, false};
  const PatchInfo patches[5] = {f.patches[0], f.patches[1], f.patches[2], f.patches[3],
                                {3, 2, {0, 0, 4, 4}, {0, 0, 0, 4, 4, 6}}};
  const PersistentSection persistent[4] = {f.persistent[0], f.persistent[1], f.persistent[2], {3, {5120, 1024}}};
  f.plan.patches = patches;
  f.plan.num_patches = 5;
  f.plan.num_stages = 3;
  f.plan.num_models = 4;
  f.plan.arena.persistent = persistent;
  f.plan.arena.num_persistent = 4;
  f.plan.arena.size = 6144;
  int32_t where = 99;
  CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kOk);
  CHECK(where == -1);
  CHECK(ModelStage(f.plan, 0) == 0 && ModelStage(f.plan, 2) == 1 && ModelStage(f.plan, 3) == 2);
  CHECK(ModelStage(f.plan, 1) == -1);  // the tail
  CHECK(PatchSource(f.plan.patches[0]) == kImageSource && PatchSource(f.plan.patches[4]) == 1);
  CHECK(ModelSource(f.plan, 2) == 0 && ModelSource(f.plan, 3) == 1 && ModelSource(f.plan, 1) == kStageBefore);
  CHECK(SourceShape(f.plan, kImageSource).c == 3 && SourceShape(f.plan, 1).c == 6 && SourceShape(f.plan, 1).h == 4);
  CHECK(SourceQuant(f.plan, kImageSource).zero_point == -1 && SourceQuant(f.plan, 0).zero_point == -100);
  {  // stage 2 reads stage 0 instead (explicitly): stage 1 is then filled and never read
    PatchInfo explicit_patches[5] = {patches[0], patches[1], patches[2], patches[3], patches[4]};
    explicit_patches[4].source = 1;  // the default, spelled out
    f.plan.patches = explicit_patches;
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kOk);
    explicit_patches[4].source = 0;
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kWindowShapeMismatch);  // stage 0 has 4 channels, not 6
    CHECK(where == 4);
    explicit_patches[4].source = 2;
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kBadSource);
    CHECK(where == 4);
    explicit_patches[4].source = -3;
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kBadSource);
    explicit_patches[4].source = 1;
    explicit_patches[0].source = kImageSource;  // stage 0 reading the image explicitly
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kOk);
    explicit_patches[0].source = 0;  // stage 0 reading itself
    CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kBadSource);
    CHECK(where == 0);
    f.plan.patches = patches;
  }
  f.models[3].in_place = true;  // stage 2's one patch reads all of stage 1 and fills all of stage 2
  CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kOk);
  f.models[3].in_place = false;
  f.stages[2].section.offset = 1280;  // over stage 1's buffer
  CHECK_STATUS(ValidatePlan(f.plan, &where), Status::kStagesOverlap);
  CHECK(where == 2);
}

// The plan of a tunnel fixture: an 8 x (8 * tunnels) image, a 4096 B shared
// region and one 1024 B persistent section per model above it (resident).
static void TunnelPlan(Plan* plan, uint16_t tunnels, uint16_t num_stages, const std::vector<StageInfo>& stages,
                       const std::vector<ModelInfo>& models, const std::vector<PatchInfo>& patches,
                       std::vector<PersistentSection>* persistent) {
  const uint16_t num_models = uint16_t(models.size());
  for (uint16_t m = 0; m < num_models; ++m) persistent->push_back({m, {4096u + 1024u * m, 1024}});
  plan->image = {8, 8u * tunnels, 3};
  plan->image_quant = {0.0078125f, -1};
  plan->stages = stages.data();
  plan->num_stages = num_stages;
  plan->models = models.data();
  plan->num_models = num_models;
  plan->patches = patches.data();
  plan->num_patches = uint16_t(patches.size());
  plan->tail_model = uint16_t(num_models - 1);
  plan->arena = {4096u + 1024u * num_models, {0, 4096}, persistent->data(), num_models, true,
                 InterpreterMode::kResident, 0};
}

// ---------------------------------------------------------------------------
// Interleaved stages: `tunnels` 8x8 columns of an 8 x 8T x 3 image, each run
// through `segments` stages, one tunnel after another (A0 B0 .. A1 B1 ..).
// Stage s < S - 1 is a 4x4x4 buffer (arena offset 1024 + 128 s) that each
// tunnel's segment-s patch fills whole (segments s >= 1 read the whole of
// stage s - 1: in place if they fill a whole stage too); the last stage,
// 2 x 2T x 6, gets one 2x2x6 box per tunnel (x = 2t), stays intact while the
// earlier stages are refilled, and is the tail's input. shared_models: one
// model per segment, the tail model S; else one per segment and tunnel
// (model t * S + s), the tail last.
struct TunnelFixture {
  std::vector<Dims> outputs;  // model m's one output
  std::vector<ModelInfo> models;
  std::vector<PatchInfo> patches;
  std::vector<StageInfo> stages;
  std::vector<PersistentSection> persistent;
  Plan plan = {};

  TunnelFixture(uint16_t tunnels, uint16_t segments, bool shared_models = true) {
    const uint16_t num_models = uint16_t((shared_models ? segments : tunnels * segments) + 1);
    const Dims whole = {3, {4, 4, 4, 0}}, box = {3, {2, 2, 6, 0}};
    for (uint16_t m = 0; m + 1 < num_models; ++m) outputs.push_back(m % segments + 1 == segments ? box : whole);
    outputs.push_back({3, {1, 1, 10, 0}});
    for (uint16_t m = 0; m + 1 < num_models; ++m) {
      const Dims input = m % segments == 0 ? Dims{3, {8, 8, 3, 0}} : whole;
      models.push_back({"segment", nullptr, 0, ModelRole::kPatch, input, &outputs[m], 1, 900, 1000, false});
    }
    const uint32_t last_w = 2u * tunnels;
    models.push_back({"tail", nullptr, 0, ModelRole::kTail, {3, {2, last_w, 6, 0}}, &outputs[num_models - 1], 1,
                      900, 1000, false});
    for (uint16_t k = 0; k + 1 < segments; ++k) stages.push_back({{4, 4, 4}, {0.02f, -3}, {1024u + 128u * k, 64}});
    const uint32_t last_bytes = (24u * tunnels + 15u) / 16u * 16u;
    stages.push_back({{2, last_w, 6}, {0.05f, 3}, {1024u + 128u * (segments - 1u), last_bytes}});
    for (uint16_t t = 0; t < tunnels; ++t) {
      for (uint16_t k = 0; k < segments; ++k) {
        const uint16_t m = uint16_t(shared_models ? k : t * segments + k);
        const Window window = k == 0 ? Window{8u * t, 0, 8, 8} : Window{0, 0, 4, 4};
        const OutputBox output = k + 1 < segments ? OutputBox{0, 0, 0, 4, 4, 4} : OutputBox{2u * t, 0, 0, 2, 2, 6};
        patches.push_back({m, k, window, output});
      }
    }
    TunnelPlan(&plan, tunnels, segments, stages, models, patches, &persistent);
  }
  TunnelFixture(const TunnelFixture&) = delete;
};

static void TunnelsOneAtATime(TunnelFixture& f) {
  for (PersistentSection& p : f.persistent) p.section = {4096, 1024};
  f.plan.arena.size = 5120;
  f.plan.arena.interpreters = InterpreterMode::kOneAtATime;
  f.plan.arena.temp_reserve = 512;
}

struct TunnelCase {
  const char* name;
  uint16_t tunnels;
  uint16_t segments;
  void (*mutate)(TunnelFixture&);
  Status want;
  int32_t where;
};

static void CheckTunnelCases(const TunnelCase* cases, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const TunnelCase& c = cases[i];
    TunnelFixture f(c.tunnels, c.segments);
    c.mutate(f);
    CheckValidation(c.name, f.plan, c.want, c.where);
  }
}

// Fills, reads and liveness from the patch order: A0 B0 A1 B1 (2 tunnels x 2
// segments: models A = 0, B = 1, tail 2) and A0 B0 C0 A1 B1 C1 (3 segments,
// tail 3). Positions: the patches, then the tail.
static void TestInterleavedStages() {
  const TunnelCase cases[] = {
      {"A0 B0 A1 B1", 2, 2, [](TunnelFixture&) {}, Status::kOk, -1},
      {"A0 B0 A1 B1, one interpreter at a time", 2, 2, TunnelsOneAtATime, Status::kOk, -1},
      {"A0 B0 C0 A1 B1 C1", 2, 3, [](TunnelFixture&) {}, Status::kOk, -1},
      {"17 tunnels x 4 segments", 17, 4, [](TunnelFixture&) {}, Status::kOk, -1},
      {"stage 0 read before it is filled (B0 A0 A1 B1)", 2, 2,
       [](TunnelFixture& f) { std::swap(f.patches[0], f.patches[1]); }, Status::kStagesOutOfOrder, 0},
      {"the last stage read half filled (A0 B0, then the tail)", 2, 2,
       [](TunnelFixture& f) { f.plan.num_patches = 2; }, Status::kStageNotCovered, 1},
      {"stage 0 refilled and never read (A0 B0 B1 A1)", 2, 2,
       [](TunnelFixture& f) { std::swap(f.patches[2], f.patches[3]); }, Status::kStagesOutOfOrder, 3},
      {"stage 1 refilled and never read (A0 B0 C0 A1 B1)", 2, 3, [](TunnelFixture& f) { f.plan.num_patches = 5; },
       Status::kStagesOutOfOrder, 4},
      {"two tunnels' boxes overlap", 2, 2, [](TunnelFixture& f) { f.patches[3].output.x = 0; },
       Status::kStageNotCovered, 1},
      {"stages 0 and 1 overlap", 2, 2, [](TunnelFixture& f) { f.stages[1].section.offset = 1024; },
       Status::kStagesOverlap, 1},
      // Stage 2 holds tunnel 0's box while A1 refills stage 0 and B1 reads it: not consecutive, alive together.
      {"stages 0 and 2 overlap", 2, 3, [](TunnelFixture& f) { f.stages[2].section.offset = 1024; },
       Status::kStagesOverlap, 2},
      {"stages 1 and 2 overlap", 2, 3, [](TunnelFixture& f) { f.stages[2].section.offset = 1152; },
       Status::kStagesOverlap, 2},
      // One tunnel is the grouped order: stage 0 is read for the last time before stage 2 is written.
      {"one tunnel: stage 2 over stage 0", 1, 3, [](TunnelFixture& f) { f.stages[2].section.offset = 1024; },
       Status::kOk, -1},
      {"in place in two fills", 2, 3, [](TunnelFixture& f) { f.models[1].in_place = true; }, Status::kOk, -1},
      {"in place with a box of a stage", 2, 2, [](TunnelFixture& f) { f.models[1].in_place = true; },
       Status::kBadInPlace, 1},
      // A0 B0 A1 B1 C0 C1: B0 and B1 fill stage 1 together, so each whole-stage patch overlaps the other.
      {"in place not alone in its fill", 2, 3, [](TunnelFixture& f) {
         f.models[1].in_place = true;
         const PatchInfo c0 = f.patches[2];
         f.patches[2] = f.patches[3];
         f.patches[3] = f.patches[4];
         f.patches[4] = c0;
       }, Status::kStageNotCovered, 1},
      {"in place in stage 0", 2, 3, [](TunnelFixture& f) { f.models[0].in_place = true; }, Status::kBadInPlace, 0},
      {"a model in two stages", 2, 2, [](TunnelFixture& f) { f.patches[3].model = 0; }, Status::kBadModelStage, 0},
  };
  CheckTunnelCases(cases, sizeof(cases) / sizeof(cases[0]));

  {  // A0 B0 A1 B1: stage 0 live over each tunnel's A..B, stage 1 from B0 to the tail
    TunnelFixture f(2, 2);
    const bool live0[5] = {true, true, true, true, false}, live1[5] = {false, true, true, true, true};
    for (uint32_t i = 0; i < 5; ++i) CHECK(StageLive(f.plan, 0, i) == live0[i] && StageLive(f.plan, 1, i) == live1[i]);
    CHECK(!StageLive(f.plan, 2, 1) && !StageLive(f.plan, 0, 99));
    // Stage 0's fills are complete before B0 and before B1; stage 1's one fill before the tail.
    for (uint32_t i = 0; i < 5; ++i) CHECK(FillCompleteAt(f.plan, 0, i) == (i == 1 || i == 3));
    for (uint32_t i = 0; i < 5; ++i) CHECK(FillCompleteAt(f.plan, 1, i) == (i == 4));
    CHECK(StageLiveWhereModelRuns(f.plan, 0, 0) && StageLiveWhereModelRuns(f.plan, 0, 1));  // A1 runs after B0
    CHECK(StageLiveWhereModelRuns(f.plan, 2, 1) && !StageLiveWhereModelRuns(f.plan, 2, 0));  // the tail
  }
  {  // A0 B0 C0 A1 B1 C1: stage 0 live at 0-1 and 3-4, stage 1 at 1-2 and 4-5, stage 2 at 2-6
    TunnelFixture f(2, 3);
    for (uint32_t i = 0; i <= 6; ++i) {
      CHECK(StageLive(f.plan, 0, i) == (i <= 1 || i == 3 || i == 4));
      CHECK(StageLive(f.plan, 1, i) == (i == 1 || i == 2 || i == 4 || i == 5));
      CHECK(StageLive(f.plan, 2, i) == (i >= 2));
    }
    CHECK(!StageLiveWhereModelRuns(f.plan, 0, 1));  // stage 1 is refilled after A1
    CHECK(StageLiveWhereModelRuns(f.plan, 0, 2) && !StageLiveWhereModelRuns(f.plan, 2, 0));  // A1; C never
  }
  {  // 17 tunnels x 4 segments, a model each: 69 models, one stage-0..2 fill per tunnel, one of stage 3
    TunnelFixture f(17, 4, false);
    CHECK(f.plan.num_models == 69 && f.plan.num_models <= kMaxModels);
    CHECK_STATUS(ValidatePlan(f.plan), Status::kOk);
    for (uint16_t k = 0; k < 4; ++k) {
      uint32_t complete = 0;
      for (uint32_t i = 0; i <= f.plan.num_patches; ++i) complete += FillCompleteAt(f.plan, k, i) ? 1 : 0;
      CHECK(complete == (k < 3 ? 17u : 1u));
    }
    CHECK(ModelStage(f.plan, 4 * 16 + 3) == 3 && ModelStage(f.plan, 68) == -1);
    for (uint32_t i = 3; i <= f.plan.num_patches; ++i) CHECK(StageLive(f.plan, 3, i));
    CHECK(!StageLive(f.plan, 3, 2));
  }
}

// one_at_a_time in A0 B0 C0 A1 B1 C1: A1 is created while stage 2 holds tunnel
// 0's box, so stage 2 limits model A's creation when it lies lower; stage 1,
// lower still, is empty whenever A runs.
static void TestInterleavedCreationLimit() {
  TunnelFixture f(2, 3);
  TunnelsOneAtATime(f);
  f.stages[0].section.offset = 1536;
  f.stages[1].section.offset = 1024;
  f.stages[2].section.offset = 1088;
  f.plan.arena.temp_reserve = 1200;
  CHECK_STATUS(ValidatePlan(f.plan), Status::kOk);
  CHECK(CreationLimit(f.plan, 0) == 1088);  // A: stage 0 (1536) and, at A1, stage 2
  CHECK(CreationLimit(f.plan, 1) == 1024);  // B: stages 0 and 1 (and 2 at B1)
  CHECK(CreationLimit(f.plan, 2) == 1024);  // C: stages 1 and 2
  CHECK(CreationLimit(f.plan, 3) == 1088);  // the tail: stage 2
  f.plan.arena.temp_reserve = 1040;
  CHECK(CreationLimit(f.plan, 0) == 1040);
  // One tunnel (the grouped order): A runs before stage 2 holds anything.
  TunnelFixture g(1, 3);
  TunnelsOneAtATime(g);
  g.stages[0].section.offset = 1536;
  g.stages[1].section.offset = 1024;
  g.stages[2].section.offset = 1088;
  g.plan.arena.temp_reserve = 1200;
  CHECK_STATUS(ValidatePlan(g.plan), Status::kOk);
  CHECK(CreationLimit(g.plan, 0) == 1200);
  CHECK(CreationLimit(g.plan, 3) == 1088);
}

// Real tunnels: each tunnel t has link stages of its own (stage t * L + s for
// segment s < L = S - 1, a 4x4x4 buffer filled whole), and its last segment
// reads ITS OWN last link (an explicit source) and writes its 2x2x6 box (x =
// 2t) of the last, merged stage T * L (2 x 2T x 6), which the tail reads.
// Segment 0 of tunnel t > 0 reads the image explicitly (stage t * L's default
// source would be tunnel t - 1's last link). One model per tunnel and segment
// (t * S + s), the tail last. Link s of every tunnel lies at 1024 + 128 s: a
// tunnel's links are dead once its last segment ran, so the next tunnel's
// reuse the memory; the merged stage at 1024 + 128 L.
struct LinkTunnelFixture {
  std::vector<Dims> outputs;
  std::vector<ModelInfo> models;
  std::vector<PatchInfo> patches;
  std::vector<StageInfo> stages;
  std::vector<PersistentSection> persistent;
  Plan plan = {};

  LinkTunnelFixture(uint16_t tunnels, uint16_t segments) {
    const uint16_t links = uint16_t(segments - 1), merged = uint16_t(tunnels * links);
    const uint16_t num_models = uint16_t(tunnels * segments + 1);
    const Dims whole = {3, {4, 4, 4, 0}}, box = {3, {2, 2, 6, 0}};
    for (uint16_t m = 0; m + 1 < num_models; ++m) outputs.push_back(m % segments == links ? box : whole);
    outputs.push_back({3, {1, 1, 10, 0}});
    for (uint16_t m = 0; m + 1 < num_models; ++m) {
      const Dims input = m % segments == 0 ? Dims{3, {8, 8, 3, 0}} : whole;
      models.push_back({"segment", nullptr, 0, ModelRole::kPatch, input, &outputs[m], 1, 900, 1000, false});
    }
    const uint32_t last_w = 2u * tunnels;
    models.push_back({"tail", nullptr, 0, ModelRole::kTail, {3, {2, last_w, 6, 0}}, &outputs[num_models - 1], 1,
                      900, 1000, false});
    for (uint16_t t = 0; t < tunnels; ++t) {
      for (uint16_t s = 0; s < links; ++s) stages.push_back({{4, 4, 4}, {0.02f, -3}, {1024u + 128u * s, 64}});
    }
    const uint32_t last_bytes = (24u * tunnels + 15u) / 16u * 16u;
    stages.push_back({{2, last_w, 6}, {0.05f, 3}, {1024u + 128u * links, last_bytes}});
    for (uint16_t t = 0; t < tunnels; ++t) {
      for (uint16_t s = 0; s < segments; ++s) {
        const uint16_t m = uint16_t(t * segments + s);
        const Window window = s == 0 ? Window{8u * t, 0, 8, 8} : Window{0, 0, 4, 4};
        if (s < links) {
          PatchInfo p = {m, uint16_t(t * links + s), window, {0, 0, 0, 4, 4, 4}};
          if (s == 0 && t > 0) p.source = kImageSource;
          patches.push_back(p);
        } else {
          patches.push_back({m, merged, window, {2u * t, 0, 0, 2, 2, 6}, int16_t(t * links + links - 1)});
        }
      }
    }
    TunnelPlan(&plan, tunnels, uint16_t(merged + 1), stages, models, patches, &persistent);
  }
  LinkTunnelFixture(const LinkTunnelFixture&) = delete;
};

struct LinkTunnelCase {
  const char* name;
  uint16_t tunnels;
  uint16_t segments;
  void (*mutate)(LinkTunnelFixture&);
  Status want;
  int32_t where;
};

// 2 tunnels x 3 segments: A0 B0 C0 A1 B1 C1 (models 0..5, tail 6); stages 0, 1
// (tunnel 0's links), 2, 3 (tunnel 1's), 4 (merged). A0 reads the image, B0
// stage 0, C0 stage 1 (explicit), A1 the image (explicit), B1 stage 2, C1
// stage 3 (explicit).
static void TestTunnelSources() {
  const LinkTunnelCase cases[] = {
      {"own links", 2, 3, [](LinkTunnelFixture&) {}, Status::kOk, -1},
      {"own links, 2 segments", 3, 2, [](LinkTunnelFixture&) {}, Status::kOk, -1},
      {"own links, 17 tunnels x 4 segments", 17, 4, [](LinkTunnelFixture&) {}, Status::kOk, -1},
      {"own links, one interpreter at a time", 2, 3, [](LinkTunnelFixture& f) {
         for (PersistentSection& p : f.persistent) p.section = {4096, 1024};
         f.plan.arena.size = 5120;
         f.plan.arena.interpreters = InterpreterMode::kOneAtATime;
         f.plan.arena.temp_reserve = 512;
       }, Status::kOk, -1},
      {"the last tunnel's default source is its own link", 2, 3,
       [](LinkTunnelFixture& f) { f.patches[5].source = kStageBefore; }, Status::kOk, -1},
      {"a patch reading its own stage", 2, 3, [](LinkTunnelFixture& f) { f.patches[1].source = 1; },
       Status::kBadSource, 1},
      {"a patch reading a later stage", 2, 3, [](LinkTunnelFixture& f) { f.patches[2].source = 4; },
       Status::kBadSource, 2},
      {"a source below the image", 2, 3, [](LinkTunnelFixture& f) { f.patches[3].source = -3; },
       Status::kBadSource, 3},
      // C1's patch run by C0's model: stage 4 both, but from stages 1 and 3.
      {"a model with two sources", 2, 3, [](LinkTunnelFixture& f) { f.patches[5].model = 2; },
       Status::kBadModelStage, 2},
      {"A1 without its explicit image source (reads stage 1)", 2, 3,
       [](LinkTunnelFixture& f) { f.patches[3].source = kStageBefore; }, Status::kWindowOutsideStage, 3},
      // C0 would read stage 3 before it is filled; stage 1 (checked first) is then never read.
      {"C0 without its explicit source", 2, 3,
       [](LinkTunnelFixture& f) { f.patches[2].source = kStageBefore; }, Status::kStagesOutOfOrder, 1},
      {"C0 reads stage 0: stage 1 never read", 2, 3, [](LinkTunnelFixture& f) { f.patches[2].source = 0; },
       Status::kStagesOutOfOrder, 1},
      {"tunnel 1's links over tunnel 0's, swapped", 2, 3, [](LinkTunnelFixture& f) {
         f.stages[2].section.offset = 1152;
         f.stages[3].section.offset = 1024;
       }, Status::kOk, -1},
      {"tunnel 1's link over the merged stage", 2, 3,
       [](LinkTunnelFixture& f) { f.stages[2].section.offset = 1280; }, Status::kStagesOverlap, 4},
      {"tunnel 0's links overlap", 2, 3, [](LinkTunnelFixture& f) { f.stages[1].section.offset = 1024; },
       Status::kStagesOverlap, 1},
      {"in place middle segments", 2, 3, [](LinkTunnelFixture& f) {
         f.models[1].in_place = true;
         f.models[4].in_place = true;
       }, Status::kOk, -1},
      {"in place reading the image", 2, 3, [](LinkTunnelFixture& f) { f.models[3].in_place = true; },
       Status::kBadInPlace, 3},
      {"in place with a box of the merged stage", 2, 3, [](LinkTunnelFixture& f) { f.models[5].in_place = true; },
       Status::kBadInPlace, 5},
  };
  for (const LinkTunnelCase& c : cases) {
    LinkTunnelFixture f(c.tunnels, c.segments);
    c.mutate(f);
    CheckValidation(c.name, f.plan, c.want, c.where);
  }

  LinkTunnelFixture f(2, 3);
  CHECK(PatchSource(f.patches[0]) == kImageSource && PatchSource(f.patches[1]) == 0);
  CHECK(PatchSource(f.patches[2]) == 1 && PatchSource(f.patches[3]) == kImageSource);
  CHECK(PatchSource(f.patches[4]) == 2 && PatchSource(f.patches[5]) == 3);
  CHECK(ModelSource(f.plan, 5) == 3 && ModelStage(f.plan, 5) == 4 && ModelSource(f.plan, 6) == kStageBefore);
  CHECK(SourceShape(f.plan, ModelSource(f.plan, 2)).c == 4);
  CHECK(SourceQuant(f.plan, ModelSource(f.plan, 3)).zero_point == -1);
  // Live: stage 0 at 0-1, 1 at 1-2, 2 at 3-4, 3 at 4-5, the merged stage 4 from C0 to the tail.
  const uint32_t first[5] = {0, 1, 3, 4, 2}, last[5] = {1, 2, 4, 5, 6};
  for (uint16_t k = 0; k < 5; ++k) {
    for (uint32_t i = 0; i <= 6; ++i) {
      CHECK(StageLive(f.plan, k, i) == (first[k] <= i && i <= last[k]));
      CHECK(FillCompleteAt(f.plan, k, i) == (i == last[k]));  // each stage: one fill, one reader
    }
  }
  CHECK(StageLiveWhereModelRuns(f.plan, 3, 4) && !StageLiveWhereModelRuns(f.plan, 0, 4));  // A1 vs A0
  CHECK(!StageLiveWhereModelRuns(f.plan, 3, 1) && StageLiveWhereModelRuns(f.plan, 5, 3));
  // one_at_a_time: links at 1536 (s = 0) and 1152 (s = 1), the merged stage at 1088.
  for (PersistentSection& p : f.persistent) p.section = {4096, 1024};
  f.plan.arena.size = 5120;
  f.plan.arena.interpreters = InterpreterMode::kOneAtATime;
  f.plan.arena.temp_reserve = 1200;
  f.stages[0].section.offset = f.stages[2].section.offset = 1536;
  f.stages[1].section.offset = f.stages[3].section.offset = 1152;
  f.stages[4].section.offset = 1088;
  CHECK_STATUS(ValidatePlan(f.plan), Status::kOk);
  CHECK(CreationLimit(f.plan, 0) == 1200);  // A0: only stage 0 (1536)
  CHECK(CreationLimit(f.plan, 3) == 1088);  // A1: the merged stage holds tunnel 0's box
  CHECK(CreationLimit(f.plan, 1) == 1152 && CreationLimit(f.plan, 4) == 1088);  // B0: links 0, 1; B1: and merged
  CHECK(CreationLimit(f.plan, 2) == 1088 && CreationLimit(f.plan, 6) == 1088);  // C0, the tail
  {  // 17 tunnels x 4 segments: every link filled and read once, the merged stage once
    LinkTunnelFixture g(17, 4);
    CHECK(g.plan.num_models == 69 && g.plan.num_stages == 52);
    for (uint16_t k = 0; k < g.plan.num_stages; ++k) {
      uint32_t complete = 0;
      for (uint32_t i = 0; i <= g.plan.num_patches; ++i) complete += FillCompleteAt(g.plan, k, i) ? 1 : 0;
      CHECK(complete == 1u);
    }
    CHECK(FillCompleteAt(g.plan, 51, g.plan.num_patches) && FillCompleteAt(g.plan, 2, 3));
  }
}

// Stage 1's windows come from stage 0's buffer inside the arena: the source
// StageSource makes reads exactly those bytes, and nothing outside the arena.
static void TestStageSource() {
  PlanFixture f;
  TwoStages(f);
  const Plan& plan = f.plan;
  Guarded image(20 * 20 * 3, 0x44);
  ArrayImage image_array = {image.data(), image.size(), plan.image};
  ImageSource image_source;
  CHECK_STATUS(MakeArrayImageSource(&image_array, &image_source), Status::kOk);
  Guarded arena(plan.arena.size, 0x55);
  const Section& s0 = plan.stages[0].section;
  for (uint32_t i = 0; i < s0.size; ++i) arena.data()[s0.offset + i] = int8_t(i * 13 + 7);

  ArrayImage view;
  ImageSource source;
  CHECK_STATUS(StageSource(plan, kImageSource, image_source, arena.data(), arena.size(), &view, &source),
               Status::kOk);
  CHECK(source.ctx == image_source.ctx && source.read_row == image_source.read_row);
  CHECK_STATUS(StageSource(plan, 1, image_source, arena.data(), arena.size(), &view, &source), Status::kOk);
  CHECK(source.shape.h == 4 && source.shape.w == 4 && source.shape.c == 6 &&
        view.data == arena.data() + plan.stages[1].section.offset);
  CHECK_STATUS(StageSource(plan, PatchSource(f.patches[3]), image_source, arena.data(), arena.size(), &view,
                           &source), Status::kOk);
  CHECK(source.shape.h == 8 && source.shape.w == 8 && source.shape.c == 4);
  const PatchInfo& p = f.patches[3];  // rows 3..7 of stage 0
  Guarded window(5 * 8 * 4, 0x66);
  CHECK_STATUS(CopyWindow(source, p.window, window.data(), window.size()), Status::kOk);
  bool same = true;
  const int8_t* rows_3_to_7 = arena.data() + s0.offset + 3 * 8 * 4;
  for (uint32_t i = 0; i < window.size(); ++i) same = same && window.data()[i] == rows_3_to_7[i];
  CHECK(same);
  CHECK(window.GuardsIntact());
  // A model input planned over the buffer it reads is refused, and nothing is copied.
  int8_t* over = arena.data() + s0.offset + 16;
  CHECK_STATUS(CopyWindow(source, p.window, over, window.size()), Status::kSourceFailed);
  bool untouched = true;
  for (uint32_t i = 0; i < s0.size; ++i) untouched = untouched && arena.data()[s0.offset + i] == int8_t(i * 13 + 7);
  CHECK(untouched);

  ImageSource wrong = image_source;
  wrong.shape.w = 19;
  CHECK_STATUS(StageSource(plan, kImageSource, wrong, arena.data(), arena.size(), &view, &source),
               Status::kImageSizeMismatch);
  CHECK_STATUS(StageSource(plan, 2, image_source, arena.data(), arena.size(), &view, &source),
               Status::kBadStageIndex);
  CHECK_STATUS(StageSource(plan, kStageBefore, image_source, arena.data(), arena.size(), &view, &source),
               Status::kBadStageIndex);
  CHECK_STATUS(StageSource(plan, 0, image_source, arena.data(), s0.offset + s0.size - 1, &view, &source),
               Status::kBufferTooSmall);
  CHECK_STATUS(StageSource(plan, 0, image_source, nullptr, arena.size(), &view, &source), Status::kNullArgument);
  CHECK_STATUS(StageSource(plan, 0, image_source, arena.data(), arena.size(), nullptr, &source),
               Status::kNullArgument);
  CHECK(arena.GuardsIntact() && image.GuardsIntact());
}

// ---------------------------------------------------------------------------

static int8_t Pixel(uint32_t y, uint32_t x, uint32_t c) { return int8_t((y * 37 + x * 11 + c * 5) & 0xFF); }

struct CountingSource {
  ArrayImage image;
  int calls;
  bool fail;
};

static bool CountingRead(void* ctx, uint32_t y, uint32_t x, uint32_t width, int8_t* dst) {
  CountingSource* s = static_cast<CountingSource*>(ctx);
  ++s->calls;
  if (s->fail) return false;
  memcpy(dst, s->image.data + (size_t(y) * s->image.shape.w + x) * s->image.shape.c, size_t(width) * s->image.shape.c);
  return true;
}

static void TestCopyWindow() {
  const Shape3 shape = {5, 6, 3};
  Guarded image(shape.h * shape.w * shape.c);
  for (uint32_t y = 0; y < shape.h; ++y)
    for (uint32_t x = 0; x < shape.w; ++x)
      for (uint32_t c = 0; c < shape.c; ++c) image.data()[(y * shape.w + x) * shape.c + c] = Pixel(y, x, c);
  ArrayImage array = {image.data(), image.size(), shape};
  ImageSource source;
  CHECK_STATUS(MakeArrayImageSource(&array, &source), Status::kOk);

  // Every window with x, y, w, h in 0..dim+1: inside ones copy exactly, the others touch nothing.
  for (uint32_t y = 0; y <= shape.h + 1; ++y)
    for (uint32_t x = 0; x <= shape.w + 1; ++x)
      for (uint32_t h = 0; h <= shape.h + 1; ++h)
        for (uint32_t w = 0; w <= shape.w + 1; ++w) {
          const bool inside = w > 0 && h > 0 && x + w <= shape.w && y + h <= shape.h;
          const size_t need = size_t(w) * h * shape.c;
          Guarded dst(need, 0x22);
          const Status s = CopyWindow(source, {x, y, w, h}, dst.data(), dst.size());
          CHECK(dst.GuardsIntact());
          if (!inside) {
            CHECK(s == Status::kWindowOutsideImage);
            CHECK(dst.All(0x22));
            continue;
          }
          CHECK(s == Status::kOk);
          bool same = true;
          for (uint32_t r = 0; r < h; ++r)
            for (uint32_t col = 0; col < w; ++col)
              for (uint32_t c = 0; c < shape.c; ++c) {
                same = same && dst.data()[(r * w + col) * shape.c + c] == Pixel(y + r, x + col, c);
              }
          CHECK(same);
          if (need > 0) {  // one byte short: refused before any row is read
            Guarded small(need - 1, 0x33);
            CHECK_STATUS(CopyWindow(source, {x, y, w, h}, small.data(), small.size()), Status::kBufferTooSmall);
            CHECK(small.GuardsIntact());
            CHECK(small.All(0x33));
          }
        }
  CHECK(image.GuardsIntact());

  CountingSource counting = {array, 0, false};
  ImageSource counted = {CountingRead, &counting, shape};
  Guarded dst(64, 0x44);
  CHECK_STATUS(CopyWindow(counted, {4, 0, 3, 1}, dst.data(), dst.size()), Status::kWindowOutsideImage);
  CHECK(counting.calls == 0);  // the source is never asked for pixels outside the image
  counting.fail = true;
  CHECK_STATUS(CopyWindow(counted, {0, 0, 2, 2}, dst.data(), dst.size()), Status::kSourceFailed);
  CHECK(dst.GuardsIntact());
  CHECK_STATUS(CopyWindow(source, {0, 0, 2, 2}, nullptr, 12), Status::kNullArgument);
  ImageSource no_callback = {nullptr, nullptr, shape};
  CHECK_STATUS(CopyWindow(no_callback, {0, 0, 2, 2}, dst.data(), dst.size()), Status::kNullArgument);

  // A source whose array is shorter than its shape is refused up front.
  ArrayImage short_array = {image.data(), image.size() - 1, shape};
  CHECK_STATUS(MakeArrayImageSource(&short_array, &source), Status::kBufferTooSmall);
  ArrayImage empty_shape = {image.data(), image.size(), {0, 6, 3}};
  CHECK_STATUS(MakeArrayImageSource(&empty_shape, &source), Status::kBadShape);
  CHECK_STATUS(MakeArrayImageSource(nullptr, &source), Status::kNullArgument);
}

static void TestPlaceOutput() {
  const Shape3 stage = {3, 4, 5};
  const size_t stage_bytes = stage.h * stage.w * stage.c;
  Guarded src(stage_bytes);
  for (size_t i = 0; i < src.size(); ++i) src.data()[i] = int8_t(i * 7 + 1);
  // Every box with each coordinate in 0..dim+1.
  for (uint32_t y = 0; y <= stage.h + 1; ++y)
    for (uint32_t x = 0; x <= stage.w + 1; ++x)
      for (uint32_t c = 0; c <= stage.c + 1; ++c)
        for (uint32_t h = 0; h <= stage.h + 1; ++h)
          for (uint32_t w = 0; w <= stage.w + 1; ++w)
            for (uint32_t ch = 0; ch <= stage.c + 1; ++ch) {
              const OutputBox box = {x, y, c, w, h, ch};
              const bool inside = w > 0 && h > 0 && ch > 0 && x + w <= stage.w && y + h <= stage.h &&
                                  c + ch <= stage.c;
              Guarded buffer(stage_bytes, -5);
              const Status s = PlaceOutput(src.data(), size_t(w) * h * ch, box, stage, buffer.data(), buffer.size());
              CHECK(buffer.GuardsIntact());
              if (!inside) {
                CHECK(s == Status::kBoxOutsideStage);
                CHECK(buffer.All(-5));
                continue;
              }
              CHECK(s == Status::kOk);
              bool same = true;
              for (uint32_t r = 0; r < stage.h; ++r)
                for (uint32_t col = 0; col < stage.w; ++col)
                  for (uint32_t k = 0; k < stage.c; ++k) {
                    const bool in_box = r >= y && r < y + h && col >= x && col < x + w && k >= c && k < c + ch;
                    const int8_t want =
                        in_box ? src.data()[((r - y) * w + (col - x)) * ch + (k - c)] : int8_t(-5);
                    same = same && buffer.data()[(r * stage.w + col) * stage.c + k] == want;
                  }
              CHECK(same);
            }
  const OutputBox box = {1, 1, 1, 2, 2, 3};
  Guarded buffer(stage_bytes, -5);
  CHECK_STATUS(PlaceOutput(src.data(), 11, box, stage, buffer.data(), buffer.size()), Status::kBufferTooSmall);
  CHECK_STATUS(PlaceOutput(src.data(), 12, box, stage, buffer.data(), stage_bytes - 1), Status::kBufferTooSmall);
  CHECK_STATUS(PlaceOutput(buffer.data() + 8, 12, box, stage, buffer.data(), buffer.size()), Status::kBuffersOverlap);
  CHECK_STATUS(PlaceOutput(nullptr, 12, box, stage, buffer.data(), buffer.size()), Status::kNullArgument);
  CHECK_STATUS(PlaceOutput(src.data(), 12, box, {0, 4, 5}, buffer.data(), buffer.size()), Status::kBadShape);
  CHECK(buffer.All(-5));
  CHECK(buffer.GuardsIntact());
  CHECK(src.GuardsIntact());
}

static void TestQuantization() {
  CHECK(Quantize(0.0f, {0.5f, 3}) == 3);
  CHECK(Quantize(1.25f, {0.5f, 0}) == 3);    // 2.5: half away from zero
  CHECK(Quantize(-1.25f, {0.5f, 0}) == -3);  // -2.5
  CHECK(Quantize(0.74f, {0.5f, 0}) == 1);
  CHECK(Quantize(1000.0f, {0.1f, 0}) == 127);
  CHECK(Quantize(-1000.0f, {0.1f, 10}) == -128);
  CHECK(Quantize(INFINITY, {0.1f, 0}) == 127);
  CHECK(Quantize(-INFINITY, {0.1f, 0}) == -128);
  CHECK(Quantize(NAN, {0.1f, -7}) == -7);
  CHECK(Dequantize(-91, {0.007f, -91}) == 0.0f);
  CHECK(fabsf(Dequantize(9, {0.25f, -3}) - 3.0f) < 1e-6f);
  for (int v = -128; v <= 127; ++v) CHECK(Quantize(Dequantize(int8_t(v), {0.03f, 5}), {0.03f, 5}) == v);
  CHECK(ValidQuant({1.0f, -128}) && ValidQuant({1e-9f, 127}));
  CHECK(!ValidQuant({1.0f, -129}) && !ValidQuant({0.0f, 0}) && !ValidQuant({NAN, 0}));

  int8_t lut[256];
  CHECK_STATUS(BuildPixelLut({1.0f / 128.0f, 0}, 127.5f, 127.5f, lut), Status::kOk);
  CHECK(lut[0] == -128 && lut[255] == 127);
  CHECK_STATUS(BuildPixelLut({0.0f, 0}, 127.5f, 127.5f, lut), Status::kBadQuantization);
  CHECK_STATUS(BuildPixelLut({1.0f, 0}, 127.5f, 0.0f, lut), Status::kBadQuantization);
  CHECK_STATUS(BuildPixelLut({1.0f, 0}, 127.5f, 127.5f, nullptr), Status::kNullArgument);
}

static void TestFrameSource() {
  const Window crop = CenterCrop(160, 120, 96, 96);
  CHECK(crop.x == 20 && crop.y == 0 && crop.w == 120 && crop.h == 120);
  const Window tall = CenterCrop(120, 160, 10, 10);
  CHECK(tall.x == 0 && tall.y == 20 && tall.w == 120 && tall.h == 120);
  const Window same = CenterCrop(160, 120, 4, 3);
  CHECK(same.x == 0 && same.y == 0 && same.w == 160 && same.h == 120);

  int8_t lut[256];
  for (int i = 0; i < 256; ++i) lut[i] = int8_t(i - 128);
  Guarded frame(8 * 6 * 2, 0x55);
  const uint8_t* data = reinterpret_cast<const uint8_t*>(frame.data());
  FrameImage f = {data, frame.size(), 8, 6, PixelFormat::kRgb565Be, {0, 0, 8, 6}, lut, {3, 4, 3}};
  ImageSource source;
  CHECK_STATUS(MakeFrameImageSource(&f, &source), Status::kOk);
  Guarded out(3 * 4 * 3, 0x66);
  CHECK_STATUS(ReadImage(source, out.data(), out.size()), Status::kOk);
  CHECK(out.GuardsIntact());
  Guarded short_out(3 * 4 * 3 - 1, 0x66);
  CHECK_STATUS(ReadImage(source, short_out.data(), short_out.size()), Status::kBufferTooSmall);
  CHECK(short_out.All(0x66) && short_out.GuardsIntact());

  FrameImage bad = f;
  bad.crop = {1, 0, 8, 6};
  CHECK_STATUS(MakeFrameImageSource(&bad, &source), Status::kWindowOutsideImage);
  bad = f;
  bad.size -= 1;
  CHECK_STATUS(MakeFrameImageSource(&bad, &source), Status::kBufferTooSmall);
  bad = f;
  bad.out_shape.c = 2;
  CHECK_STATUS(MakeFrameImageSource(&bad, &source), Status::kBadShape);
  bad = f;
  bad.lut = nullptr;
  CHECK_STATUS(MakeFrameImageSource(&bad, &source), Status::kNullArgument);
  bad = f;
  bad.format = PixelFormat(9);
  CHECK_STATUS(MakeFrameImageSource(&bad, &source), Status::kBadShape);
  CHECK(frame.GuardsIntact());
}

static void TestScores() {
  const int8_t scores[] = {3, -7, 9, 9, -128, 0};
  CHECK(Argmax(scores, 6) == 2);
  CHECK(Argmax(scores, 0) == -1);
  CHECK(Argmax(nullptr, 6) == -1);
  uint16_t top[8] = {};
  CHECK(TopK(scores, 6, 3, top) == 3);
  CHECK(top[0] == 2 && top[1] == 3 && top[2] == 0);
  CHECK(TopK(scores, 6, 8, top) == 6);
  CHECK(top[3] == 5 && top[4] == 1 && top[5] == 4);
  CHECK(TopK(scores, 6, 0, top) == 0);
  CHECK(TopK(scores, 0, 3, top) == 0);
}

static void TestStatusStrings() {
  for (int s = int(Status::kOk); s <= int(Status::kNotInitialized); ++s) {
    CHECK(strcmp(StatusString(Status(s)), "unknown status") != 0);
  }
}

int main() {
  TestValidatePlan();
  TestValidateOneAtATimePlan();
  TestValidateTwoStagePlan();
  TestValidateOutputs();
  TestThreeStagesReuse();
  TestCreationLimit();
  TestInterleavedStages();
  TestInterleavedCreationLimit();
  TestTunnelSources();
  TestStageSource();
  TestCopyWindow();
  TestPlaceOutput();
  TestQuantization();
  TestFrameSource();
  TestScores();
  TestStatusStrings();
  if (g_failures != 0) {
    fprintf(stderr, "bounds_test: %d of %d checks failed\n", g_failures, g_checks);
    return 1;
  }
  printf("bounds_test: %d checks passed\n", g_checks);
  return 0;
}
