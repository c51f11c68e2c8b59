// Plain C++ part of the tinyvision device runtime; see tinyvision_runtime.h.
#include "tinyvision_runtime.h"

#include <math.h>
#include <string.h>

// The value of a macro as a string literal (kMaxOutputs in a status line).
#define TINYVISION_STRINGIFY_(x) #x
#define TINYVISION_STRINGIFY(x) TINYVISION_STRINGIFY_(x)

namespace tinyvision {
namespace {

// Sizes are checked in 64 bits so that no plan value can wrap a comparison.
uint64_t Volume(const Shape3& s) { return uint64_t(s.h) * s.w * s.c; }

bool ValidShape(const Shape3& s) {
  return s.h > 0 && s.w > 0 && s.c > 0 && Volume(s) <= 0xFFFFFFFFull;
}

bool ValidDims(const Dims& d) {
  if (d.rank < 1 || d.rank > 4) return false;
  uint64_t volume = 1;
  for (uint8_t i = 0; i < d.rank; ++i) {
    if (d.d[i] == 0) return false;
    volume *= d.d[i];
    if (volume > 0xFFFFFFFFull) return false;
  }
  return true;
}

bool DimsAre(const Dims& d, uint32_t h, uint32_t w, uint32_t c) {
  return d.rank == 3 && d.d[0] == h && d.d[1] == w && d.d[2] == c;
}

// Half-open byte ranges [offset, offset + size).
bool Inside(const Section& inner, const Section& outer) {
  return uint64_t(inner.offset) >= outer.offset &&
         uint64_t(inner.offset) + inner.size <= uint64_t(outer.offset) + outer.size;
}

bool Overlap(const Section& a, const Section& b) {
  return uint64_t(a.offset) < uint64_t(b.offset) + b.size && uint64_t(b.offset) < uint64_t(a.offset) + a.size;
}

bool RangesOverlap(const void* a, size_t a_size, const void* b, size_t b_size) {
  const uintptr_t pa = reinterpret_cast<uintptr_t>(a);
  const uintptr_t pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_size && pb < pa + a_size;
}

Status Fail(Status status, int32_t index, int32_t* where) {
  if (where != nullptr) *where = index;
  return status;
}

// Positions: the patches 0 .. n - 1 in plan order, the tail at n. Position i
// writes stage k when it is a patch of stage k, and reads stage k when it is a
// patch whose source (PatchSource) is k (its window) or the tail and k the
// last stage.
bool Writes(const Plan& plan, uint16_t k, uint32_t i) { return i < plan.num_patches && plan.patches[i].stage == k; }

bool Reads(const Plan& plan, uint16_t k, uint32_t i) {
  if (i < plan.num_patches) return PatchSource(plan.patches[i]) == int32_t(k);
  return i == plan.num_patches && uint32_t(k) + 1 == plan.num_stages;
}

// One fill of a stage: its writes are the stage's patches in [begin, end),
// end being its first read (n + 1: never read, which ValidatePlan refuses);
// it is live over [begin, last] (last: its last read, n when never read).
struct Fill {
  uint32_t begin;
  uint32_t end;
  uint32_t last;
};

// The first fill of stage k starting at or after position `from`; false when
// no patch of stage k runs there. A fill's reads run until the next write of
// k, so the next fill starts after `last`: iterate with from = last + 1.
bool FindFill(const Plan& plan, uint16_t k, uint32_t from, Fill* fill) {
  const uint32_t n = plan.num_patches;
  uint32_t i = from;
  while (i < n && !Writes(plan, k, i)) ++i;
  if (i >= n) return false;
  fill->begin = i;
  while (i <= n && !Reads(plan, k, i)) ++i;
  fill->end = i;
  fill->last = i > n ? n : i;
  for (; i <= n && !Writes(plan, k, i); ++i) {
    if (Reads(plan, k, i)) fill->last = i;
  }
  return true;
}

// Whether stages a and b are live at a common position: a fill of each with
// intersecting live ranges. The fills of one stage are disjoint and ascending,
// so this is O(n) per fill of a.
bool LiveTogether(const Plan& plan, uint16_t a, uint16_t b) {
  Fill fa, fb;
  for (uint32_t from_a = 0; FindFill(plan, a, from_a, &fa); from_a = fa.last + 1) {
    for (uint32_t from_b = 0; FindFill(plan, b, from_b, &fb) && fb.begin <= fa.last; from_b = fb.last + 1) {
      if (fa.begin <= fb.last) return true;
    }
  }
  return false;
}

// The one_at_a_time rules on top of the common ones: the TFLM glue creates a
// model's interpreter on ONE arena from shared.offset to the end of the
// model's section (so sections lie above shared). Where AllocateTensors writes
// while stage buffers hold data (below CreationLimit) depends on the model:
// the runtime checks it as it creates each one.
Status ValidateOneAtATime(const Plan& plan, int32_t* where) {
  const ArenaLayout& a = plan.arena;
  if (a.temp_reserve % kArenaAlignment != 0) return Fail(Status::kMisaligned, -1, where);
  const uint64_t shared_end = uint64_t(a.shared.offset) + a.shared.size;
  for (uint16_t i = 0; i < a.num_persistent; ++i) {
    if (a.persistent[i].section.offset < shared_end) return Fail(Status::kSectionBelowShared, i, where);
  }
  return Status::kOk;
}

Status ValidateArena(const Plan& plan, int32_t* where) {
  const ArenaLayout& a = plan.arena;
  const Section whole = {0, a.size};
  if (a.interpreters != InterpreterMode::kResident && a.interpreters != InterpreterMode::kOneAtATime) {
    return Fail(Status::kBadPlan, -1, where);
  }
  const bool resident = a.interpreters == InterpreterMode::kResident;
  if (a.size == 0) return Fail(Status::kSectionOutsideArena, -1, where);
  if (a.shared.size == 0 || !Inside(a.shared, whole)) return Fail(Status::kSectionOutsideArena, -1, where);
  if (a.shared.offset % kArenaAlignment != 0) return Fail(Status::kMisaligned, -1, where);
  for (uint16_t k = 0; k < plan.num_stages; ++k) {
    const Section& section = plan.stages[k].section;
    if (section.offset % kArenaAlignment != 0) return Fail(Status::kMisaligned, k, where);
    if (!Inside(section, a.shared)) return Fail(Status::kStageOutsideShared, k, where);
    if (uint64_t(section.size) < Volume(plan.stages[k].shape)) return Fail(Status::kStageTooSmall, k, where);
    // Stages live at a common position hold data together (in a grouped plan k - 1 and k: stage k - 1 is read
    // while stage k is written); the memory of a stage no longer live may be reused.
    for (uint16_t j = 0; j < k; ++j) {
      if (Overlap(plan.stages[j].section, section) && LiveTogether(plan, j, k)) {
        return Fail(Status::kStagesOverlap, k, where);
      }
    }
  }
  if (a.persistent == nullptr && a.num_persistent > 0) return Fail(Status::kNullArgument, -1, where);
  if (a.num_persistent != plan.num_models) return Fail(Status::kMissingSection, -1, where);
  for (uint16_t i = 0; i < a.num_persistent; ++i) {
    const PersistentSection& p = a.persistent[i];
    if (p.model >= plan.num_models) return Fail(Status::kBadModelIndex, i, where);
    if (p.section.offset % kArenaAlignment != 0) return Fail(Status::kMisaligned, i, where);
    if (p.section.size == 0 || !Inside(p.section, whole)) return Fail(Status::kSectionOutsideArena, i, where);
    if (Overlap(p.section, a.shared)) return Fail(Status::kSectionsOverlap, i, where);
    // What the converter measured for the model on TFLM must fit where the plan puts it.
    const ModelInfo& model = plan.models[p.model];
    if (model.nonpersistent_bytes > a.shared.size || model.persistent_bytes > p.section.size) {
      return Fail(Status::kModelExceedsSection, p.model, where);
    }
    for (uint16_t j = 0; j < i; ++j) {
      // num_persistent == num_models and no model twice => every model once.
      if (a.persistent[j].model == p.model) return Fail(Status::kMissingSection, i, where);
      // Only resident interpreters are alive together and need sections of their own.
      if (resident && Overlap(a.persistent[j].section, p.section)) return Fail(Status::kSectionsOverlap, i, where);
    }
  }
  return resident ? Status::kOk : ValidateOneAtATime(plan, where);
}

bool BoxesOverlap(const OutputBox& a, const OutputBox& b) {
  const auto axis = [](uint32_t a0, uint32_t an, uint32_t b0, uint32_t bn) {
    return uint64_t(a0) < uint64_t(b0) + bn && uint64_t(b0) < uint64_t(a0) + an;
  };
  return axis(a.x, a.w, b.x, b.w) && axis(a.y, a.h, b.y, b.h) && axis(a.c, a.channels, b.c, b.channels);
}

// The boxes of the patches of stage k in [begin, end) (one fill, each box
// inside its buffer) cover the buffer exactly once: pairwise disjoint and as
// many values as the buffer has. Quadratic in the patches of a fill (a few
// dozen on a device).
bool CoversStage(const Plan& plan, uint16_t k, uint32_t begin, uint32_t end) {
  uint64_t values = 0;
  for (uint32_t i = begin; i < end; ++i) {
    if (!Writes(plan, k, i)) continue;
    const OutputBox& b = plan.patches[i].output;
    values += uint64_t(b.h) * b.w * b.channels;
    for (uint32_t j = begin; j < i; ++j) {
      if (Writes(plan, k, j) && BoxesOverlap(plan.patches[j].output, b)) return false;
    }
  }
  return values == Volume(plan.stages[k].shape);
}

// Patch i reads the whole of its source stage (not the image) and fills the whole of stage k.
bool WholeStagePatch(const Plan& plan, uint32_t i) {
  const PatchInfo& p = plan.patches[i];
  const int32_t from = PatchSource(p);
  if (from < 0) return false;
  const Shape3& source = plan.stages[from].shape;
  const Shape3& stage = plan.stages[p.stage].shape;
  const Window& w = p.window;
  const OutputBox& b = p.output;
  return w.x == 0 && w.y == 0 && w.w == source.w && w.h == source.h && b.x == 0 && b.y == 0 && b.c == 0 &&
         b.w == stage.w && b.h == stage.h && b.channels == stage.c;
}

// The fills of stage k (windows and boxes checked): nothing reads the stage
// before its first write; each fill covers the buffer once, holds an in-place
// model's patch only alone and whole-stage, and is read.
Status ValidateFills(const Plan& plan, uint16_t k, int32_t* where) {
  const uint32_t n = plan.num_patches;
  for (uint32_t i = 0; i < n && !Writes(plan, k, i); ++i) {
    if (Reads(plan, k, i)) return Fail(Status::kStagesOutOfOrder, int32_t(i), where);
  }
  Fill fill;
  for (uint32_t from = 0; FindFill(plan, k, from, &fill); from = fill.last + 1) {
    const uint32_t end = fill.end < n ? fill.end : n;
    if (!CoversStage(plan, k, fill.begin, end)) return Fail(Status::kStageNotCovered, k, where);
    uint32_t writes = 0, last_write = fill.begin;
    for (uint32_t i = fill.begin; i < end; ++i) {
      if (!Writes(plan, k, i)) continue;
      ++writes;
      last_write = i;
    }
    for (uint32_t i = fill.begin; i < end; ++i) {
      const uint16_t m = plan.patches[i].model;
      if (Writes(plan, k, i) && plan.models[m].in_place && !(writes == 1 && WholeStagePatch(plan, i))) {
        return Fail(Status::kBadInPlace, m, where);
      }
    }
    // Only the last stage is read by the tail: another stage's last fill may have no reader.
    if (fill.end > n) return Fail(Status::kStagesOutOfOrder, int32_t(last_write), where);
  }
  return Status::kOk;
}

// Indices and roles, stages with patches, model stages, windows and boxes of
// every patch, then the fills of every stage.
Status ValidatePatches(const Plan& plan, int32_t* where) {
  for (uint16_t i = 0; i < plan.num_patches; ++i) {
    const PatchInfo& p = plan.patches[i];
    if (p.model >= plan.num_models) return Fail(Status::kBadModelIndex, i, where);
    if (plan.models[p.model].role != ModelRole::kPatch) return Fail(Status::kWrongModelRole, i, where);
    if (p.stage >= plan.num_stages) return Fail(Status::kBadStageIndex, i, where);
    if (p.source != kStageBefore && (p.source < kImageSource || p.source >= int32_t(p.stage))) {
      return Fail(Status::kBadSource, i, where);
    }
  }
  for (uint16_t k = 0; k < plan.num_stages; ++k) {
    uint16_t i = 0;
    while (i < plan.num_patches && plan.patches[i].stage != k) ++i;
    if (i == plan.num_patches) return Fail(Status::kEmptyStage, k, where);
  }
  // ModelStage is the stage of the model's first patch: O(1) memory for any number of models.
  for (uint16_t i = 0; i < plan.num_patches; ++i) {
    const PatchInfo& p = plan.patches[i];
    if (ModelStage(plan, p.model) != p.stage) return Fail(Status::kBadModelStage, p.model, where);
    // A model serves one stage from one source (its input quantization is the source's).
    if (ModelSource(plan, p.model) != PatchSource(p)) return Fail(Status::kBadModelStage, p.model, where);
  }
  for (uint16_t m = 0; m < plan.num_models; ++m) {
    if (m != plan.tail_model && ModelStage(plan, m) < 0) return Fail(Status::kBadModelStage, m, where);
  }
  for (uint16_t i = 0; i < plan.num_patches; ++i) {
    const PatchInfo& p = plan.patches[i];
    const ModelInfo& model = plan.models[p.model];
    const int32_t from = PatchSource(p);
    const Shape3 source = SourceShape(plan, from);
    const Window& w = p.window;
    if (w.w == 0 || w.h == 0 || uint64_t(w.x) + w.w > source.w || uint64_t(w.y) + w.h > source.h) {
      return Fail(from == kImageSource ? Status::kWindowOutsideImage : Status::kWindowOutsideStage, i, where);
    }
    if (!DimsAre(model.input, w.h, w.w, source.c)) return Fail(Status::kWindowShapeMismatch, i, where);
    const Shape3& stage = plan.stages[p.stage].shape;
    const OutputBox& b = p.output;
    if (b.w == 0 || b.h == 0 || b.channels == 0 || uint64_t(b.x) + b.w > stage.w ||
        uint64_t(b.y) + b.h > stage.h || uint64_t(b.c) + b.channels > stage.c) {
      return Fail(Status::kBoxOutsideStage, i, where);
    }
    // ValidatePlan gave every patch model exactly one output.
    if (!DimsAre(model.outputs[0], b.h, b.w, b.channels)) return Fail(Status::kBoxShapeMismatch, i, where);
  }
  for (uint16_t k = 0; k < plan.num_stages; ++k) {
    const Status s = ValidateFills(plan, k, where);
    if (s != Status::kOk) return s;
  }
  if (plan.models[plan.tail_model].in_place) return Fail(Status::kBadInPlace, plan.tail_model, where);
  return Status::kOk;
}

}  // namespace

const char* StatusString(Status status) {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kNullArgument: return "null argument";
    case Status::kBadPlan:
      return "bad plan (no models, patches or stages, too many models, unknown interpreter mode, or too few "
             "interpreter slots)";
    case Status::kBadShape: return "bad shape (zero or too large dimension)";
    case Status::kBadOutputs:
      return "a patch model needs one output, a tail 1.." TINYVISION_STRINGIFY(TINYVISION_MAX_OUTPUTS);
    case Status::kBadModelIndex: return "model index out of range";
    case Status::kWrongModelRole: return "patch names the tail model, or tail names a patch model";
    case Status::kBadInPlace:
      return "an in-place model's patch is not a whole-stage patch reading a stage, alone in its fill";
    case Status::kWindowOutsideImage: return "patch window outside the image";
    case Status::kWindowOutsideStage: return "patch window outside its source stage's buffer";
    case Status::kWindowShapeMismatch: return "patch window does not match the model input shape";
    case Status::kBoxOutsideStage: return "output box outside its stage buffer";
    case Status::kBoxShapeMismatch: return "output box does not match the model output shape";
    case Status::kStageNotCovered:
      return "the output boxes of a stage's fill do not cover its buffer exactly once";
    case Status::kStageShapeMismatch: return "tail input shape is not the last stage's shape";
    case Status::kBadStageIndex: return "patch stage index out of range";
    case Status::kStagesOutOfOrder: return "a stage is read before it is filled, or filled and never read";
    case Status::kEmptyStage: return "a stage has no patch";
    case Status::kBadModelStage: return "a patch model runs in two stages, or in no patch";
    case Status::kSectionOutsideArena: return "arena section outside the arena";
    case Status::kSectionsOverlap: return "arena sections overlap";
    case Status::kSectionBelowShared: return "one_at_a_time: a persistent section lies below the shared region";
    case Status::kStageOutsideShared: return "stage buffer outside the shared arena region";
    case Status::kStageTooSmall: return "stage section smaller than the stage shape";
    case Status::kStagesOverlap: return "the buffers of two stages alive at the same time overlap";
    case Status::kMisaligned: return "arena section offset not 16-byte aligned";
    case Status::kMissingSection: return "a model has no persistent section, or two";
    case Status::kBadQuantization: return "bad quantization (scale <= 0 or zero point outside int8)";
    case Status::kImageSizeMismatch: return "image size differs from the plan";
    case Status::kBufferTooSmall: return "buffer too small";
    case Status::kBuffersOverlap: return "source and destination buffers overlap";
    case Status::kSourceFailed: return "image source failed to deliver a row";
    case Status::kArenaTooSmall: return "tensor arena smaller than the plan's arena size";
    case Status::kSchemaMismatch: return "model schema version differs from TFLM's";
    case Status::kAllocateFailed:
      return "AllocateTensors failed (arena section or temp_reserve too small, or operator missing)";
    case Status::kCreationOutsideReserve:
      return "creating an interpreter wrote shared bytes above arena.temp_reserve or into a stage buffer holding "
             "data (temp_reserve or persistent section too small)";
    case Status::kTensorMismatch:
      return "model tensors differ from the plan (count, shape, type or quantization)";
    case Status::kModelExceedsSection: return "a model's measured TFLM head or tail exceeds its arena section";
    case Status::kStageNotPlanned:
      return "a model's input or output is not where the plan says (in place on the stage buffers, or not)";
    case Status::kPatchTouchesStage:
      return "a patch model writes into the buffer of a stage alive while it runs (its own, the one it reads, ...)";
    case Status::kInvokeFailed: return "Invoke failed";
    case Status::kNotInitialized: return "runner not initialized";
    case Status::kBadSource: return "a patch reads neither the image nor an earlier stage";
  }
  return "unknown status";
}

bool ValidQuant(const Quant& q) {
  return isfinite(q.scale) && q.scale > 0.0f && q.zero_point >= -128 && q.zero_point <= 127;
}

Status ValidatePlan(const Plan& plan, int32_t* where) {
  if (where != nullptr) *where = -1;
  // A whole model (no stage, no patch) is one tail model reading the image.
  const bool whole_model = plan.num_stages == 0 && plan.num_patches == 0;
  if (plan.num_models == 0 || plan.num_models > kMaxModels || (whole_model && plan.num_models != 1) ||
      (!whole_model && (plan.num_patches == 0 || plan.num_stages == 0))) {
    return Fail(Status::kBadPlan, -1, where);
  }
  if (plan.models == nullptr || (!whole_model && (plan.patches == nullptr || plan.stages == nullptr))) {
    return Fail(Status::kNullArgument, -1, where);
  }
  if (!ValidShape(plan.image)) return Fail(Status::kBadShape, -1, where);
  if (!ValidQuant(plan.image_quant)) return Fail(Status::kBadQuantization, -1, where);
  for (uint16_t k = 0; k < plan.num_stages; ++k) {
    if (!ValidShape(plan.stages[k].shape)) return Fail(Status::kBadShape, k, where);
    if (!ValidQuant(plan.stages[k].quant)) return Fail(Status::kBadQuantization, k, where);
  }
  if (plan.tail_model >= plan.num_models) return Fail(Status::kBadModelIndex, -1, where);
  for (uint16_t m = 0; m < plan.num_models; ++m) {
    const ModelInfo& model = plan.models[m];
    if (!ValidDims(model.input)) return Fail(Status::kBadShape, m, where);
    if ((m == plan.tail_model) != (model.role == ModelRole::kTail)) return Fail(Status::kWrongModelRole, m, where);
    // A patch model's one output fills its box of the stage buffer; only the tail (a detector with one
    // output per scale) may have several.
    const uint16_t max_outputs = model.role == ModelRole::kTail ? kMaxOutputs : 1;
    if (model.num_outputs == 0 || model.num_outputs > max_outputs) return Fail(Status::kBadOutputs, m, where);
    if (model.outputs == nullptr) return Fail(Status::kNullArgument, m, where);
    for (uint16_t i = 0; i < model.num_outputs; ++i) {
      if (!ValidDims(model.outputs[i])) return Fail(Status::kBadShape, m, where);
    }
  }
  const Shape3& last = whole_model ? plan.image : plan.stages[plan.num_stages - 1].shape;
  if (!DimsAre(plan.models[plan.tail_model].input, last.h, last.w, last.c)) {
    return Fail(Status::kStageShapeMismatch, plan.tail_model, where);
  }
  // The tail's input can only be planned at a stage buffer: a whole model's is copied from the image.
  if (whole_model && plan.arena.tail_input_at_stage) return Fail(Status::kBadPlan, -1, where);
  const Status patches = whole_model ? Status::kOk : ValidatePatches(plan, where);
  return patches != Status::kOk ? patches : ValidateArena(plan, where);
}

bool StageLive(const Plan& plan, uint16_t stage, uint32_t position) {
  if (stage >= plan.num_stages) return false;
  Fill fill;
  for (uint32_t from = 0; FindFill(plan, stage, from, &fill) && fill.begin <= position; from = fill.last + 1) {
    if (position <= fill.last) return true;
  }
  return false;
}

bool StageLiveWhereModelRuns(const Plan& plan, uint16_t model, uint16_t stage) {
  if (stage >= plan.num_stages) return false;
  const uint32_t n = plan.num_patches;
  Fill fill;
  // The live ranges of one stage's fills are disjoint: O(n) in all.
  for (uint32_t from = 0; FindFill(plan, stage, from, &fill); from = fill.last + 1) {
    for (uint32_t i = fill.begin; i <= fill.last; ++i) {
      if (i < n ? plan.patches[i].model == model : model == plan.tail_model) return true;
    }
  }
  return false;
}

bool FillCompleteAt(const Plan& plan, uint16_t stage, uint32_t position) {
  if (!Reads(plan, stage, position)) return false;
  // The first read of a fill: the stage's last event before it is a write, not another read.
  for (uint32_t i = position; i-- > 0;) {
    if (Writes(plan, stage, i)) return true;
    if (Reads(plan, stage, i)) return false;
  }
  return false;
}

uint32_t CreationLimit(const Plan& plan, uint16_t model) {
  uint64_t limit = plan.arena.temp_reserve;
  for (uint16_t s = 0; s < plan.num_stages; ++s) {
    const uint64_t above = uint64_t(plan.stages[s].section.offset) - plan.arena.shared.offset;
    if (plan.stages[s].section.offset >= plan.arena.shared.offset && above < limit &&
        StageLiveWhereModelRuns(plan, model, s)) {
      limit = above;
    }
  }
  return uint32_t(limit);
}

int32_t PatchSource(const PatchInfo& patch) {
  return patch.source == kStageBefore ? int32_t(patch.stage) - 1 : int32_t(patch.source);
}

Shape3 SourceShape(const Plan& plan, int32_t source) {
  return source < 0 ? plan.image : plan.stages[source].shape;
}

Quant SourceQuant(const Plan& plan, int32_t source) {
  return source < 0 ? plan.image_quant : plan.stages[source].quant;
}

int32_t ModelStage(const Plan& plan, uint16_t model) {
  for (uint16_t i = 0; i < plan.num_patches; ++i) {
    if (plan.patches[i].model == model) return plan.patches[i].stage;
  }
  return -1;
}

int32_t ModelSource(const Plan& plan, uint16_t model) {
  for (uint16_t i = 0; i < plan.num_patches; ++i) {
    if (plan.patches[i].model == model) return PatchSource(plan.patches[i]);
  }
  return kStageBefore;
}

// ---------------------------------------------------------------------------

namespace {

bool ReadArrayRow(void* ctx, uint32_t y, uint32_t x, uint32_t width, int8_t* dst) {
  const ArrayImage* image = static_cast<const ArrayImage*>(ctx);
  const uint64_t begin = (uint64_t(y) * image->shape.w + x) * image->shape.c;
  const uint64_t count = uint64_t(width) * image->shape.c;
  if (y >= image->shape.h || uint64_t(x) + width > image->shape.w || begin + count > image->size) return false;
  // A window of a stage buffer must not land in that buffer (a model input planned over it).
  if (RangesOverlap(dst, size_t(count), image->data, image->size)) return false;
  memcpy(dst, image->data + begin, size_t(count));
  return true;
}

}  // namespace

Status MakeArrayImageSource(const ArrayImage* image, ImageSource* source) {
  if (image == nullptr || source == nullptr || image->data == nullptr) return Status::kNullArgument;
  if (!ValidShape(image->shape)) return Status::kBadShape;
  if (uint64_t(image->size) < Volume(image->shape)) return Status::kBufferTooSmall;
  source->read_row = ReadArrayRow;
  source->ctx = const_cast<ArrayImage*>(image);
  source->shape = image->shape;
  return Status::kOk;
}

Status StageSource(const Plan& plan, int32_t source_index, const ImageSource& image, const int8_t* arena,
                   size_t arena_size, ArrayImage* view, ImageSource* source) {
  if (view == nullptr || source == nullptr || plan.stages == nullptr) return Status::kNullArgument;
  if (source_index < kImageSource || source_index >= int32_t(plan.num_stages)) return Status::kBadStageIndex;
  if (source_index == kImageSource) {
    const Shape3& s = image.shape;
    if (s.h != plan.image.h || s.w != plan.image.w || s.c != plan.image.c) return Status::kImageSizeMismatch;
    *source = image;
    return Status::kOk;
  }
  if (arena == nullptr) return Status::kNullArgument;
  const StageInfo& read = plan.stages[source_index];
  if (uint64_t(read.section.offset) + read.section.size > arena_size) return Status::kBufferTooSmall;
  *view = {arena + read.section.offset, read.section.size, read.shape};
  return MakeArrayImageSource(view, source);
}

Status CopyWindow(const ImageSource& source, const Window& window, int8_t* dst, size_t dst_size) {
  if (source.read_row == nullptr || dst == nullptr) return Status::kNullArgument;
  if (!ValidShape(source.shape)) return Status::kBadShape;
  if (window.w == 0 || window.h == 0 || uint64_t(window.x) + window.w > source.shape.w ||
      uint64_t(window.y) + window.h > source.shape.h) {
    return Status::kWindowOutsideImage;
  }
  const uint64_t row_bytes = uint64_t(window.w) * source.shape.c;
  if (row_bytes * window.h > dst_size) return Status::kBufferTooSmall;
  for (uint32_t r = 0; r < window.h; ++r) {
    if (!source.read_row(source.ctx, window.y + r, window.x, window.w, dst + r * row_bytes)) {
      return Status::kSourceFailed;
    }
  }
  return Status::kOk;
}

Status PlaceOutput(const int8_t* src, size_t src_size, const OutputBox& box, const Shape3& stage,
                   int8_t* stage_buffer, size_t stage_size) {
  if (src == nullptr || stage_buffer == nullptr) return Status::kNullArgument;
  if (!ValidShape(stage)) return Status::kBadShape;
  const uint64_t stage_bytes = Volume(stage);
  if (stage_bytes > stage_size) return Status::kBufferTooSmall;
  if (box.w == 0 || box.h == 0 || box.channels == 0 || uint64_t(box.x) + box.w > stage.w ||
      uint64_t(box.y) + box.h > stage.h || uint64_t(box.c) + box.channels > stage.c) {
    return Status::kBoxOutsideStage;
  }
  const uint64_t src_bytes = uint64_t(box.h) * box.w * box.channels;
  if (src_bytes > src_size) return Status::kBufferTooSmall;
  if (RangesOverlap(src, size_t(src_bytes), stage_buffer, size_t(stage_bytes))) return Status::kBuffersOverlap;
  const size_t pixel_stride = stage.c;
  for (uint32_t r = 0; r < box.h; ++r) {
    int8_t* row = stage_buffer + ((size_t(box.y) + r) * stage.w + box.x) * pixel_stride + box.c;
    const int8_t* in = src + size_t(r) * box.w * box.channels;
    if (box.channels == stage.c) {  // whole pixels: the row is contiguous in the stage too
      memcpy(row, in, size_t(box.w) * box.channels);
    } else {
      for (uint32_t col = 0; col < box.w; ++col) {
        memcpy(row + col * pixel_stride, in + size_t(col) * box.channels, box.channels);
      }
    }
  }
  return Status::kOk;
}

// ---------------------------------------------------------------------------

int8_t Quantize(float value, const Quant& quant) {
  const float v = value / quant.scale;
  const float lo = float(-128 - quant.zero_point);
  const float hi = float(127 - quant.zero_point);
  if (v != v) return int8_t(quant.zero_point < -128 ? -128 : quant.zero_point > 127 ? 127 : quant.zero_point);
  // floor(|v| + 0.5) rather than roundf: tinyvision's Python side computes
  // exactly this in float32, so the test image and camera path agree bit for bit.
  float r = v >= 0.0f ? floorf(v + 0.5f) : -floorf(-v + 0.5f);
  if (r < lo) r = lo;
  if (r > hi) r = hi;
  return int8_t(int32_t(r) + quant.zero_point);
}

float Dequantize(int8_t value, const Quant& quant) {
  return quant.scale * float(int32_t(value) - quant.zero_point);
}

Status BuildPixelLut(const Quant& quant, float mean, float std, int8_t lut[256]) {
  if (lut == nullptr) return Status::kNullArgument;
  if (!ValidQuant(quant) || !isfinite(mean) || !isfinite(std) || std == 0.0f) return Status::kBadQuantization;
  for (int p = 0; p < 256; ++p) lut[p] = Quantize((float(p) - mean) / std, quant);
  return Status::kOk;
}

uint32_t BytesPerPixel(PixelFormat format) {
  switch (format) {
    case PixelFormat::kRgb888: return 3;
    case PixelFormat::kRgb565Be: return 2;
    case PixelFormat::kRgb565Le: return 2;
    case PixelFormat::kGray8: return 1;
  }
  return 0;
}

namespace {

void DecodePixel(const uint8_t* p, PixelFormat format, uint8_t rgb[3]) {
  switch (format) {
    case PixelFormat::kRgb888:
      rgb[0] = p[0];
      rgb[1] = p[1];
      rgb[2] = p[2];
      return;
    case PixelFormat::kRgb565Be:
    case PixelFormat::kRgb565Le: {
      const uint16_t v = format == PixelFormat::kRgb565Be ? uint16_t((p[0] << 8) | p[1]) : uint16_t((p[1] << 8) | p[0]);
      const uint8_t r = (v >> 11) & 0x1F, g = (v >> 5) & 0x3F, b = v & 0x1F;
      rgb[0] = uint8_t((r << 3) | (r >> 2));
      rgb[1] = uint8_t((g << 2) | (g >> 4));
      rgb[2] = uint8_t((b << 3) | (b >> 2));
      return;
    }
    case PixelFormat::kGray8:
      rgb[0] = rgb[1] = rgb[2] = p[0];
      return;
  }
}

bool ReadFrameRow(void* ctx, uint32_t y, uint32_t x, uint32_t width, int8_t* dst) {
  const FrameImage* f = static_cast<const FrameImage*>(ctx);
  const Shape3& out = f->out_shape;
  if (y >= out.h || uint64_t(x) + width > out.w) return false;
  const uint32_t bpp = BytesPerPixel(f->format);
  const uint64_t sy = f->crop.y + uint64_t(y) * f->crop.h / out.h;
  const uint8_t* row = f->data + size_t(sy * f->width * bpp);
  for (uint32_t i = 0; i < width; ++i) {
    const uint64_t sx = f->crop.x + uint64_t(x + i) * f->crop.w / out.w;
    uint8_t rgb[3] = {0, 0, 0};
    DecodePixel(row + size_t(sx * bpp), f->format, rgb);
    if (out.c == 3) {
      dst[0] = f->lut[rgb[0]];
      dst[1] = f->lut[rgb[1]];
      dst[2] = f->lut[rgb[2]];
      dst += 3;
    } else {
      *dst++ = f->lut[f->format == PixelFormat::kGray8 ? rgb[0] : (77u * rgb[0] + 150u * rgb[1] + 29u * rgb[2]) >> 8];
    }
  }
  return true;
}

}  // namespace

Status MakeFrameImageSource(const FrameImage* frame, ImageSource* source) {
  if (frame == nullptr || source == nullptr || frame->data == nullptr || frame->lut == nullptr) {
    return Status::kNullArgument;
  }
  const uint32_t bpp = BytesPerPixel(frame->format);
  if (bpp == 0 || frame->width == 0 || frame->height == 0 || !ValidShape(frame->out_shape) ||
      (frame->out_shape.c != 1 && frame->out_shape.c != 3)) {
    return Status::kBadShape;
  }
  if (uint64_t(frame->width) * frame->height * bpp > frame->size) return Status::kBufferTooSmall;
  const Window& c = frame->crop;
  if (c.w == 0 || c.h == 0 || uint64_t(c.x) + c.w > frame->width || uint64_t(c.y) + c.h > frame->height) {
    return Status::kWindowOutsideImage;
  }
  source->read_row = ReadFrameRow;
  source->ctx = const_cast<FrameImage*>(frame);
  source->shape = frame->out_shape;
  return Status::kOk;
}

Window CenterCrop(uint32_t frame_w, uint32_t frame_h, uint32_t out_w, uint32_t out_h) {
  Window crop = {0, 0, frame_w, frame_h};
  if (out_w == 0 || out_h == 0) return crop;
  if (uint64_t(frame_w) * out_h > uint64_t(frame_h) * out_w) {
    crop.w = uint32_t(uint64_t(frame_h) * out_w / out_h);
  } else {
    crop.h = uint32_t(uint64_t(frame_w) * out_h / out_w);
  }
  if (crop.w == 0) crop.w = 1;
  if (crop.h == 0) crop.h = 1;
  crop.x = (frame_w - crop.w) / 2;
  crop.y = (frame_h - crop.h) / 2;
  return crop;
}

Status ReadImage(const ImageSource& source, int8_t* dst, size_t dst_size) {
  const Window whole = {0, 0, source.shape.w, source.shape.h};
  return CopyWindow(source, whole, dst, dst_size);
}

// ---------------------------------------------------------------------------

int32_t Argmax(const int8_t* scores, size_t count) {
  if (scores == nullptr || count == 0) return -1;
  size_t best = 0;
  for (size_t i = 1; i < count; ++i) {
    if (scores[i] > scores[best]) best = i;
  }
  return int32_t(best);
}

size_t TopK(const int8_t* scores, size_t count, size_t k, uint16_t* top) {
  if (scores == nullptr || top == nullptr) return 0;
  if (k > count) k = count;
  size_t filled = 0;
  for (size_t i = 0; i < count; ++i) {
    // Insertion into the sorted prefix; strict '>' keeps the lower index first on ties.
    size_t pos = filled;
    while (pos > 0 && scores[i] > scores[top[pos - 1]]) --pos;
    if (pos >= k) continue;
    const size_t last = filled < k ? filled : k - 1;
    for (size_t j = last; j > pos; --j) top[j] = top[j - 1];
    top[pos] = uint16_t(i);
    if (filled < k) ++filled;
  }
  return filled;
}

}  // namespace tinyvision
