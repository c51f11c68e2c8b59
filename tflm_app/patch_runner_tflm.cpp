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

// What MicroInterpreter::AllocateTensors writes into the non-persistent
// buffer B (TFLM micro_allocator.cpp, micro_graph.cpp, micro_allocation_info.cpp,
// greedy_memory_planner.cpp and the arena allocators, in both Arduino
// libraries and upstream tflite-micro; sizes for 32-bit Cortex-M4):
//  - the scratch-buffer requests kernels make in Prepare, 12 bytes each at
//    B[0, 12 R), in a resizable buffer kept 12 (R + 12) bytes long;
//  - per node, the TfLiteTensor copies Prepare takes with
//    AllocateTemp{Input,Output}Tensor, just above those requests and freed
//    after the node: 64 B each, + 16 + 4 q B for a quantized tensor with q
//    scales (CMSIS-NN conv and depthwise hold input, filter, output twice);
//  - CommitStaticMemoryPlan's AllocationInfo array (24 B per tensor and per
//    scratch request), then the memory planner's scratch: ALL the remaining
//    non-persistent memory, over which GreedyMemoryPlanner spreads its arrays
//    (40 B per planned buffer in five arrays at 0..90 % of it): hence
//    ReservePlanner. Tensor data is not written (activations are only
//    planned), kernels' Init/Prepare write only to persistent memory, and
//    ReserveNonPersistentOverlayMemory just moves a pointer.
// So with the planner kept below CreationLimit every write lies in
// [shared.offset, shared.offset + CreationLimit), under the stage buffers
// holding data, as long as the Prepare temps fit there too, which
// InitOneAtATime checks by painting (docs/bundle-format.md gives the formula).
TfLiteStatus ReservePlanner::Init(unsigned char* scratch_buffer, int scratch_buffer_size) {
  const ptrdiff_t room = limit_ - scratch_buffer;
  const int size = room <= 0 ? 0 : room < scratch_buffer_size ? int(room) : scratch_buffer_size;
  return tflite::GreedyMemoryPlanner::Init(scratch_buffer, size);
}

PatchRunner::PatchRunner(const Plan& plan, const tflite::MicroOpResolver& resolver, uint8_t* arena,
                         size_t arena_size, InterpreterSlot* slots, size_t num_slots, MicrosFn micros)
    : plan_(plan),
      resolver_(resolver),
      arena_(arena),
      arena_size_(arena_size),
      slots_(slots),
      num_slots_(num_slots),
      micros_(micros) {
  // The slots hold no interpreter of this runner yet (whatever their bytes are).
  for (size_t i = 0; slots_ != nullptr && i < num_slots_; ++i) slots_[i].interpreter = nullptr;
}

PatchRunner::~PatchRunner() { DestroyInterpreters(); }

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
  if (num_slots_ < InterpreterSlotsNeeded(plan_)) return Fail(Status::kBadPlan, -1);
  DestroyInterpreters();
  max_model_bytes_ = 0;
  creation_bytes_ = 0;
  memset(arena_, kPaint, plan_.arena.size);
  painted_ = true;
  const Status s = one_at_a_time() ? InitOneAtATime(probe_stage) : InitResident(probe_stage);
  ready_ = s == Status::kOk;
  return s;
}

Status PatchRunner::InitResident(bool probe_stage) {
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    const Status s = CreateInterpreter(m);
    if (s != Status::kOk) return Fail(s, m);
  }
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    const Status s = CheckModel(m);
    if (s != Status::kOk) return Fail(s, m);
  }
  for (uint16_t m = 0; probe_stage && m < plan_.num_models; ++m) {
    const Status s = ProbePatch(m);
    if (s != Status::kOk) return Fail(s, m);
  }
  return Status::kOk;
}

// Each model in turn: paint shared, create (the shared bytes it touched are
// exactly AllocateTensors' writes: no tensor data is written before Invoke),
// check, probe, destroy. A creation that stays below CreationLimit leaves the
// stage buffers holding data while the model is created intact.
Status PatchRunner::InitOneAtATime(bool probe_stage) {
  for (uint16_t m = 0; m < plan_.num_models; ++m) {
    memset(arena_ + plan_.arena.shared.offset, kPaint, plan_.arena.shared.size);
    Status s = CreateInterpreter(m);
    if (s != Status::kOk) return Fail(s, m);
    const uint32_t touched = SharedTouched();
    if (touched > creation_bytes_) creation_bytes_ = touched;
    if (touched > CreationLimit(plan_, m)) return Fail(Status::kCreationOutsideReserve, m);
    s = CheckModel(m);
    if (s == Status::kOk && probe_stage) s = ProbePatch(m);
    if (s != Status::kOk) return Fail(s, m);
    DestroyInterpreters();
  }
  return Status::kOk;
}

tflite::MicroAllocator* PatchRunner::CreateAllocator(const Section& persistent, uint32_t creation_limit) {
  const Section& shared = plan_.arena.shared;
  if (!one_at_a_time()) {
    // MicroAllocator::Create placement-news its own objects into the persistent
    // section without checking for room: refuse a section below that overhead.
    if (persistent.size < tflite::MicroAllocator::GetDefaultTailUsage(false)) return nullptr;
    return tflite::MicroAllocator::Create(arena_ + persistent.offset, persistent.size, arena_ + shared.offset,
                                          shared.size);
  }
  // The split Create above always makes its own GreedyMemoryPlanner; only the
  // one-arena Create takes ours. Its head starts at shared.offset (offline
  // offsets stay offsets into shared) and its tail grows down from the
  // section end; a tail larger than the section would reach into shared,
  // which InitOneAtATime's paint check reports.
  if (persistent.size < tflite::MicroAllocator::GetDefaultTailUsage(true)) return nullptr;
  planner_.set_limit(arena_ + shared.offset + creation_limit);
  return tflite::MicroAllocator::Create(arena_ + shared.offset, persistent.offset + persistent.size - shared.offset,
                                        &planner_);
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
  // Re-creating over a section a destroyed interpreter used is safe: Create
  // placement-news fresh allocator objects there and keeps no other state.
  tflite::MicroAllocator* allocator =
      persistent == nullptr ? nullptr : CreateAllocator(*persistent, CreationLimit(plan_, m));
  if (allocator == nullptr) return Status::kAllocateFailed;
  InterpreterSlot& slot = slots_[Slot(m)];
  tflite::MicroInterpreter* interpreter = new (slot.bytes) tflite::MicroInterpreter(model, resolver_, allocator);
  // A failed AllocateTensors is abandoned, not destroyed: ~MicroInterpreter
  // calls every node's free() through registrations that a failure in
  // PrepareNodeAndRegistrationDataFromFlatbuffer (missing operator) leaves
  // unset. Its storage is simply reused.
  if (interpreter->AllocateTensors() != kTfLiteOk) return Status::kAllocateFailed;
  slot.interpreter = interpreter;
  if (one_at_a_time()) live_model_ = m;
  const size_t bytes = interpreter->arena_used_bytes();
  if (bytes > max_model_bytes_) max_model_bytes_ = uint32_t(bytes);
  return Status::kOk;
}

// Model m's live interpreter, or null: resident, the one in its own slot;
// one_at_a_time, the one in slot 0 if it is m's.
tflite::MicroInterpreter* PatchRunner::Interpreter(uint16_t m) const {
  if (one_at_a_time() && live_model_ != int32_t(m)) return nullptr;
  const size_t slot = Slot(m);
  return slot < num_slots_ ? slots_[slot].interpreter : nullptr;
}

// ~MicroInterpreter only calls the kernels' free() (none of the builtin
// kernels has one); the allocator and planner objects in the arena own
// nothing. It must run before the section is reused: free() is reached
// through node data in that section.
void PatchRunner::DestroyInterpreters() {
  for (size_t i = 0; slots_ != nullptr && i < num_slots_; ++i) {
    if (slots_[i].interpreter != nullptr) slots_[i].interpreter->~MicroInterpreter();
    slots_[i].interpreter = nullptr;
  }
  live_model_ = -1;
}

// The interpreter of model m, ready to run: always there in resident mode;
// in one_at_a_time mode created (after destroying the previous model's) when
// m is not the model that ran last.
Status PatchRunner::Activate(uint16_t m, uint32_t* create_us) {
  if (Interpreter(m) != nullptr) return Status::kOk;
  const uint32_t start = Now(micros_);
  DestroyInterpreters();
  const Status s = CreateInterpreter(m);
  *create_us += Elapsed(micros_, start);
  return s;
}

Status PatchRunner::CheckModel(uint16_t m) {
  const ModelInfo& info = plan_.models[m];
  tflite::MicroInterpreter* interpreter = Interpreter(m);
  // ValidatePlan bounds num_outputs: one for a patch model, 1..kMaxOutputs for the tail (RunResult's room).
  if (interpreter->inputs_size() != 1 || interpreter->outputs_size() != info.num_outputs) {
    return Status::kTensorMismatch;
  }
  const TfLiteTensor* in = interpreter->input(0);
  if (!Int8Tensor(in) || !SameDims(in, info.input)) return Status::kTensorMismatch;
  for (uint16_t i = 0; i < info.num_outputs; ++i) {
    const TfLiteTensor* y = interpreter->output(i);
    if (!Int8Tensor(y) || !SameDims(y, info.outputs[i])) return Status::kTensorMismatch;
  }
  if (info.role == ModelRole::kTail && plan_.num_stages == 0) {  // a whole model: reads the image
    if (!SameQuant(in, plan_.image_quant) || in->bytes != Volume(plan_.image)) return Status::kTensorMismatch;
    return Status::kOk;
  }
  if (info.role == ModelRole::kTail) {
    const StageInfo& last = plan_.stages[plan_.num_stages - 1];
    if (!SameQuant(in, last.quant) || in->bytes != Volume(last.shape)) return Status::kTensorMismatch;
    // Both ways: a plan that says "not planned" for a model planned at the stage disagrees with its model.
    const bool at_stage = in->data.int8 == reinterpret_cast<const int8_t*>(arena_ + last.section.offset);
    if (at_stage != plan_.arena.tail_input_at_stage) return Status::kStageNotPlanned;
    return Status::kOk;
  }
  // A valid plan runs every patch model in the patches of one stage k, all reading one source.
  const uint16_t k = uint16_t(ModelStage(plan_, m));
  const int32_t source = ModelSource(plan_, m);
  const TfLiteTensor* out = interpreter->output(0);  // its only output
  if (!SameQuant(in, SourceQuant(plan_, source)) || !SameQuant(out, plan_.stages[k].quant)) {
    return Status::kTensorMismatch;
  }
  // Both ways, as for the tail: an in-place model's tensors are its stage buffers, any other's avoid them.
  const bool on_stages =
      source >= 0 && in->data.raw == StageData(uint16_t(source)) && out->data.raw == StageData(k);
  if (on_stages != info.in_place) return Status::kStageNotPlanned;
  for (uint16_t s = 0; s < plan_.num_stages; ++s) {
    if (!Guarded(m, s)) continue;
    const Section& section = plan_.stages[s].section;
    if (TouchesRange(in, arena_ + section.offset, section.size) ||
        TouchesRange(out, arena_ + section.offset, section.size)) {
      return Status::kPatchTouchesStage;
    }
  }
  return Status::kOk;
}

// Whether patch model m must leave stage s's buffer alone: s is live where m
// runs (a stage-k model: always its source stage and k), and not one of an
// in-place model's own two, which are its input and output tensors.
bool PatchRunner::Guarded(uint16_t m, uint16_t s) const {
  const int32_t k = ModelStage(plan_, m);
  if (plan_.models[m].in_place && (int32_t(s) == k || int32_t(s) == ModelSource(plan_, m))) return false;
  return StageLiveWhereModelRuns(plan_, m, s);
}

// Scratch buffers are invisible through the public API, so the only way to
// know a patch model leaves the buffers of the stages live where it runs
// alone is to run it: paint them, invoke the patch model once, and look. The
// tail is not probed: it runs last.
Status PatchRunner::ProbePatch(uint16_t m) {
  if (plan_.models[m].role != ModelRole::kPatch) return Status::kOk;
  bool any = false;
  for (uint16_t s = 0; s < plan_.num_stages; ++s) {
    if (!Guarded(m, s)) continue;
    memset(arena_ + plan_.stages[s].section.offset, kPaint, plan_.stages[s].section.size);
    any = true;
  }
  // Only an in-place model can have nothing to guard (a grouped plan's: its own two stages are all that is live).
  if (!any) return Status::kOk;
  tflite::MicroInterpreter* interpreter = Interpreter(m);
  TfLiteTensor* in = interpreter->input(0);
  memset(in->data.raw, 0, in->bytes);  // not in those buffers (CheckModel); in place: its source stage's buffer
  if (interpreter->Invoke() != kTfLiteOk) return Status::kInvokeFailed;
  for (uint16_t s = 0; s < plan_.num_stages; ++s) {
    if (!Guarded(m, s)) continue;
    const uint8_t* buffer = arena_ + plan_.stages[s].section.offset;
    for (uint32_t i = 0; i < plan_.stages[s].section.size; ++i) {
      if (buffer[i] != kPaint) return Status::kPatchTouchesStage;
    }
  }
  return Status::kOk;
}

// Bytes of shared from its start to the last one not holding the paint.
uint32_t PatchRunner::SharedTouched() const {
  const Section& shared = plan_.arena.shared;
  uint32_t touched = shared.size;
  while (touched > 0 && arena_[shared.offset + touched - 1] == kPaint) --touched;
  return touched;
}

Status PatchRunner::Run(const ImageSource& image, RunResult* result) {
  error_index_ = -1;
  if (!ready_) return Fail(Status::kNotInitialized, -1);
  if (result == nullptr) return Fail(Status::kNullArgument, -1);
  if (image.shape.h != plan_.image.h || image.shape.w != plan_.image.w || image.shape.c != plan_.image.c) {
    return Fail(Status::kImageSizeMismatch, -1);
  }
  RunResult r = {};
  ArrayImage view = {};     // a source stage's buffer
  ImageSource source = {};  // where the current patch's window comes from
  const uint32_t start = Now(micros_);
  for (uint16_t i = 0; i < plan_.num_patches; ++i) {
    const PatchInfo& patch = plan_.patches[i];
    const StageInfo& stage = plan_.stages[patch.stage];
    const int32_t from = PatchSource(patch);
    Status s = Status::kOk;
    // A fill of the stage this patch reads has just been completed (grouped plans: the previous stage ended).
    if (observer_ != nullptr && from >= 0 && FillCompleteAt(plan_, uint16_t(from), i)) {
      ObserveStage(uint16_t(from));
    }
    if (i == 0 || from != PatchSource(plan_.patches[i - 1])) {  // StageSource depends on the source only
      s = StageSource(plan_, from, image, reinterpret_cast<const int8_t*>(arena_), plan_.arena.size, &view,
                      &source);
      if (s != Status::kOk) return Fail(s, i);
    }
    s = Activate(patch.model, &r.create_us);
    if (s != Status::kOk) return Fail(s, i);
    tflite::MicroInterpreter* interpreter = Interpreter(patch.model);
    const bool in_place = plan_.models[patch.model].in_place;  // CheckModel: its tensors are the stage buffers
    TfLiteTensor* in = interpreter->input(0);
    uint32_t t = Now(micros_);
    if (!in_place) s = CopyWindow(source, patch.window, in->data.int8, in->bytes);
    r.copy_us += Elapsed(micros_, t);
    if (s != Status::kOk) return Fail(s, i);
    if (interpreter->Invoke() != kTfLiteOk) return Fail(Status::kInvokeFailed, i);
    if (in_place) continue;
    const TfLiteTensor* out = interpreter->output(0);
    t = Now(micros_);
    s = PlaceOutput(out->data.int8, out->bytes, patch.output, stage.shape,
                    reinterpret_cast<int8_t*>(arena_ + stage.section.offset), stage.section.size);
    r.copy_us += Elapsed(micros_, t);
    if (s != Status::kOk) return Fail(s, i);
  }
  // The tail is the last stage's only reader: its one fill is complete. A whole model has no stage.
  if (plan_.num_stages > 0) ObserveStage(uint16_t(plan_.num_stages - 1));
  r.patch_us = Elapsed(micros_, start);
  const uint32_t tail_start = Now(micros_);
  const Status s = Activate(plan_.tail_model, &r.create_us);
  if (s != Status::kOk) return Fail(s, plan_.tail_model);
  tflite::MicroInterpreter* tail = Interpreter(plan_.tail_model);
  if (plan_.num_stages == 0) {  // a whole model: the image is its input
    const Window all = {0, 0, plan_.image.w, plan_.image.h};
    const Status copied = CopyWindow(image, all, tail->input(0)->data.int8, tail->input(0)->bytes);
    if (copied != Status::kOk) return Fail(copied, plan_.tail_model);
  } else if (!plan_.arena.tail_input_at_stage) {
    // The tail's own plan may overlap the last stage's buffer: memmove, not memcpy.
    const StageInfo& last = plan_.stages[plan_.num_stages - 1];
    memmove(tail->input(0)->data.raw, arena_ + last.section.offset, Volume(last.shape));
  }
  if (tail->Invoke() != kTfLiteOk) return Fail(Status::kInvokeFailed, plan_.tail_model);
  r.tail_us = Elapsed(micros_, tail_start);
  r.total_us = Elapsed(micros_, start);
  // Graph outputs live until the end of the graph in TFLM's plan: after Invoke all of them hold their values.
  r.num_outputs = plan_.models[plan_.tail_model].num_outputs;  // CheckModel: the interpreter's output count
  for (uint16_t i = 0; i < r.num_outputs; ++i) {
    const TfLiteTensor* out = tail->output(i);
    r.outputs[i] = {out->data.int8, out->bytes, {out->params.scale, out->params.zero_point}};
    Observe(uint16_t(plan_.num_stages + i), out->data.int8, out->bytes);
  }
  r.scores = r.outputs[0].data;
  r.num_scores = r.outputs[0].size;
  r.score_quant = r.outputs[0].quant;
  *result = r;
  return Status::kOk;
}

void PatchRunner::Observe(uint16_t stage, const int8_t* data, size_t bytes) const {
  if (observer_ != nullptr) observer_(observer_context_, stage, data, bytes);
}

void PatchRunner::ObserveStage(uint16_t k) const {
  if (observer_ == nullptr) return;
  const StageInfo& stage = plan_.stages[k];
  Observe(k, reinterpret_cast<const int8_t*>(arena_ + stage.section.offset), Volume(stage.shape));
}

// Resident: the sections side by side, each used from the first byte touched
// (TFLM's tail grows down from the section end). one_at_a_time: every model
// used the same slot (its tail ends at its own section end), counted once.
uint32_t PatchRunner::PersistentUsed() const {
  uint32_t used = 0, slot_begin = 0xFFFFFFFFu, slot_end = 0;
  for (uint16_t i = 0; i < plan_.arena.num_persistent; ++i) {
    const Section& s = plan_.arena.persistent[i].section;
    uint32_t untouched = 0;
    while (untouched < s.size && arena_[s.offset + untouched] == kPaint) ++untouched;
    used += s.size - untouched;
    if (untouched < s.size && s.offset + untouched < slot_begin) slot_begin = s.offset + untouched;
    if (s.offset + s.size > slot_end) slot_end = s.offset + s.size;
  }
  if (!one_at_a_time()) return used;
  return slot_begin < slot_end ? slot_end - slot_begin : 0;
}

ArenaUsage PatchRunner::MeasureArena() const {
  ArenaUsage usage = {};
  usage.arena_size = plan_.arena.size;
  if (!painted_) return usage;  // Init never got as far as painting the arena
  usage.shared_used = SharedTouched();
  usage.persistent_used = PersistentUsed();
  usage.used = usage.shared_used + usage.persistent_used;
  usage.tflm_max_model_bytes = max_model_bytes_;
  usage.creation_bytes = creation_bytes_;
  return usage;
}

}  // namespace tinyvision
