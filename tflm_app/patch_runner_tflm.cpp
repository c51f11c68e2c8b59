// TFLM glue of the tinyvision device runtime; see patch_runner_tflm.h.
#include "patch_runner_tflm.h"

#include <math.h>
#include <new>
#include <string.h>

#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace tinyvision {
namespace {

constexpr uint8_t kPaint = 0xA5;

// Plan scales come from the same .tflite files through JSON and C literals;
// allow for the last-digit rounding of that trip, nothing more.
bool SameQuant(const TfLiteTensor* t, const Quant& q) {
  return t->params.zero_point == q.zero_point && fabsf(t->params.scale - q.scale) <= 1e-6f * q.scale;
}

// The tensor's dims equal the plan's once leading 1s are dropped from both:
// the plan omits the batch and writes a (1, C) tensor as [1, 1, C].
bool SameDims(const TfLiteTensor* t, const Dims& d) {
  const TfLiteIntArray* dims = t->dims;
  if (dims == nullptr) return false;
  int a = 0, b = 0;
  while (a < dims->size - 1 && dims->data[a] == 1) ++a;
  while (b < d.rank - 1 && d.d[b] == 1) ++b;
  if (dims->size - a != d.rank - b) return false;
  for (; a < dims->size; ++a, ++b) {
    if (dims->data[a] < 0 || uint32_t(dims->data[a]) != d.d[b]) return false;
  }
  return true;
}

size_t Volume(const Shape3& s) { return size_t(s.h) * s.w * s.c; }

bool Int8Tensor(const TfLiteTensor* t) { return t != nullptr && t->type == kTfLiteInt8 && t->data.int8 != nullptr; }

bool TouchesRange(const TfLiteTensor* t, const uint8_t* begin, size_t size) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(t->data.raw);
  const uintptr_t b = reinterpret_cast<uintptr_t>(begin);
  return a < b + size && b < a + t->bytes;
}

uint32_t Elapsed(MicrosFn micros, uint32_t since) { return micros == nullptr ? 0 : micros() - since; }
uint32_t Now(MicrosFn micros) { return micros == nullptr ? 0 : micros(); }

}  // namespace

PatchRunner::PatchRunner(const Plan& plan, const tflite::MicroOpResolver& resolver, uint8_t* arena,
                         size_t arena_size, InterpreterSlot* slots, size_t num_slots, MicrosFn micros)
    : plan_(plan),
      resolver_(resolver),
      arena_(arena),
      arena_size_(arena_size),
      slots_(slots),
      num_slots_(num_slots),
      micros_(micros) {}

PatchRunner::~PatchRunner() {
  for (tflite::MicroInterpreter*& interpreter : interpreters_) {
    if (interpreter != nullptr) interpreter->~MicroInterpreter();
    interpreter = nullptr;
  }
}

Status PatchRunner::Fail(Status status, int32_t index) {
  error_index_ = index;
  return status;
}

Status PatchRunner::Init(bool probe_stage) {
  ready_ = false;
  error_index_ = -1;
  int32_t where = -1;
  const Status valid = ValidatePlan(plan_, &where);
  if (valid != Status::kOk) return Fail(valid, where);
  if (arena_ == nullptr || slots_ == nullptr) return Fail(Status::kNullArgument, -1);
  if (reinterpret_cast<uintptr_t>(arena_) % kArenaAlignment != 0) return Fail(Status::kMisaligned, -1);
  if (arena_size_ < plan_.arena.size) return Fail(Status::kArenaTooSmall, -1);
  if (num_slots_ < plan_.num_models) return Fail(Status::kBadPlan, -1);
  for (tflite::MicroInterpreter*& interpreter : interpreters_) {
    if (interpreter != nullptr) interpreter->~MicroInterpreter();
    interpreter = nullptr;
  }
  memset(arena_, kPaint, plan_.arena.size);
  painted_ = true;
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    const Status s = CreateInterpreter(m);
    if (s != Status::kOk) return Fail(s, m);
  }
  const Status tensors = CheckTensors();
  if (tensors != Status::kOk) return tensors;
  if (probe_stage) {
    const Status probe = ProbeStage();
    if (probe != Status::kOk) return probe;
  }
  ready_ = true;
  return Status::kOk;
}

Status PatchRunner::CreateInterpreter(uint16_t m) {
  const ModelInfo& info = plan_.models[m];
  if (info.data == nullptr) return Status::kNullArgument;
  const tflite::Model* model = tflite::GetModel(info.data);
  if (model->version() != TFLITE_SCHEMA_VERSION) return Status::kSchemaMismatch;
  const Section* persistent = nullptr;
  for (uint16_t i = 0; i < plan_.arena.num_persistent; ++i) {
    if (plan_.arena.persistent[i].model == m) persistent = &plan_.arena.persistent[i].section;
  }
  // MicroAllocator::Create placement-news its own objects into the persistent
  // section without checking for room: refuse a section below that overhead.
  if (persistent == nullptr || persistent->size < tflite::MicroAllocator::GetDefaultTailUsage(false)) {
    return Status::kAllocateFailed;
  }
  tflite::MicroAllocator* allocator =
      tflite::MicroAllocator::Create(arena_ + persistent->offset, persistent->size,
                                     arena_ + plan_.arena.shared.offset, plan_.arena.shared.size);
  if (allocator == nullptr) return Status::kAllocateFailed;
  interpreters_[m] = new (slots_[m].bytes) tflite::MicroInterpreter(model, resolver_, allocator);
  if (interpreters_[m]->AllocateTensors() != kTfLiteOk) return Status::kAllocateFailed;
  if (interpreters_[m]->inputs_size() != 1 || interpreters_[m]->outputs_size() != 1) return Status::kTensorMismatch;
  return Status::kOk;
}

Status PatchRunner::CheckTensors() {
  const uint8_t* stage = arena_ + plan_.arena.stage.offset;
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    const ModelInfo& info = plan_.models[m];
    const TfLiteTensor* in = interpreters_[m]->input(0);
    const TfLiteTensor* out = interpreters_[m]->output(0);
    if (!Int8Tensor(in) || !Int8Tensor(out) || !SameDims(in, info.input) || !SameDims(out, info.output)) {
      return Fail(Status::kTensorMismatch, m);
    }
    if (info.role == ModelRole::kTail) {
      if (!SameQuant(in, plan_.stage_quant) || in->bytes != Volume(plan_.stage)) {
        return Fail(Status::kTensorMismatch, m);
      }
      if (plan_.arena.tail_input_at_stage && in->data.int8 != reinterpret_cast<const int8_t*>(stage)) {
        return Fail(Status::kStageNotPlanned, m);
      }
    } else {
      if (!SameQuant(in, plan_.image_quant) || !SameQuant(out, plan_.stage_quant)) {
        return Fail(Status::kTensorMismatch, m);
      }
      if (TouchesRange(in, stage, plan_.arena.stage.size) || TouchesRange(out, stage, plan_.arena.stage.size)) {
        return Fail(Status::kPatchTouchesStage, m);
      }
    }
  }
  return Status::kOk;
}

// Scratch buffers are invisible through the public API, so the only way to
// know a patch model leaves the stage alone is to run it: paint the stage,
// invoke each patch model once, and look.
Status PatchRunner::ProbeStage() {
  uint8_t* stage = arena_ + plan_.arena.stage.offset;
  memset(stage, kPaint, plan_.arena.stage.size);
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    if (plan_.models[m].role != ModelRole::kPatch) continue;
    TfLiteTensor* in = interpreters_[m]->input(0);
    memset(in->data.raw, 0, in->bytes);
    if (interpreters_[m]->Invoke() != kTfLiteOk) return Fail(Status::kInvokeFailed, m);
    for (uint32_t i = 0; i < plan_.arena.stage.size; ++i) {
      if (stage[i] != kPaint) return Fail(Status::kPatchTouchesStage, m);
    }
  }
  return Status::kOk;
}

Status PatchRunner::Run(const ImageSource& image, RunResult* result) {
  error_index_ = -1;
  if (!ready_) return Fail(Status::kNotInitialized, -1);
  if (result == nullptr) return Fail(Status::kNullArgument, -1);
  if (image.shape.h != plan_.image.h || image.shape.w != plan_.image.w || image.shape.c != plan_.image.c) {
    return Fail(Status::kImageSizeMismatch, -1);
  }
  int8_t* stage = reinterpret_cast<int8_t*>(arena_ + plan_.arena.stage.offset);
  RunResult r = {};
  const uint32_t start = Now(micros_);
  for (uint16_t i = 0; i < plan_.num_patches; ++i) {
    const PatchInfo& patch = plan_.patches[i];
    tflite::MicroInterpreter* interpreter = interpreters_[patch.model];
    TfLiteTensor* in = interpreter->input(0);
    uint32_t t = Now(micros_);
    Status s = CopyWindow(image, patch.window, in->data.int8, in->bytes);
    r.copy_us += Elapsed(micros_, t);
    if (s != Status::kOk) return Fail(s, i);
    if (interpreter->Invoke() != kTfLiteOk) return Fail(Status::kInvokeFailed, i);
    const TfLiteTensor* out = interpreter->output(0);
    t = Now(micros_);
    s = PlaceOutput(out->data.int8, out->bytes, patch.output, plan_.stage, stage, plan_.arena.stage.size);
    r.copy_us += Elapsed(micros_, t);
    if (s != Status::kOk) return Fail(s, i);
  }
  r.patch_us = Elapsed(micros_, start);
  tflite::MicroInterpreter* tail = interpreters_[plan_.tail_model];
  const uint32_t tail_start = Now(micros_);
  if (!plan_.arena.tail_input_at_stage) {
    // The tail's own plan may overlap the stage: memmove, not memcpy.
    memmove(tail->input(0)->data.raw, stage, Volume(plan_.stage));
  }
  if (tail->Invoke() != kTfLiteOk) return Fail(Status::kInvokeFailed, plan_.tail_model);
  r.tail_us = Elapsed(micros_, tail_start);
  r.total_us = Elapsed(micros_, start);
  const TfLiteTensor* out = tail->output(0);
  r.scores = out->data.int8;
  r.num_scores = out->bytes;
  r.score_quant = {out->params.scale, out->params.zero_point};
  *result = r;
  return Status::kOk;
}

ArenaUsage PatchRunner::MeasureArena() const {
  ArenaUsage usage = {};
  usage.arena_size = plan_.arena.size;
  if (!painted_) return usage;  // Init never got as far as painting the arena
  const Section& shared = plan_.arena.shared;
  uint32_t touched = shared.size;
  while (touched > 0 && arena_[shared.offset + touched - 1] == kPaint) --touched;
  usage.shared_used = touched;
  for (uint16_t i = 0; i < plan_.arena.num_persistent; ++i) {
    const Section& s = plan_.arena.persistent[i].section;
    uint32_t untouched = 0;
    while (untouched < s.size && arena_[s.offset + untouched] == kPaint) ++untouched;
    usage.persistent_used += s.size - untouched;
  }
  usage.used = usage.shared_used + usage.persistent_used;
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    if (interpreters_[m] == nullptr) continue;
    const size_t bytes = interpreters_[m]->arena_used_bytes();
    if (bytes > usage.tflm_max_model_bytes) usage.tflm_max_model_bytes = uint32_t(bytes);
  }
  return usage;
}

}  // namespace tinyvision
