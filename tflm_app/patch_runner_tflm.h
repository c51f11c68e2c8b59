// PatchRunner on TensorFlow Lite Micro's public API: the models of a patch
// bundle run one after another in ONE tensor arena (docs/bundle-format.md),
// with one of two interpreter modes (plan arena.interpreters):
//
// resident: one MicroInterpreter per model, all alive. Each gets its own
// MicroAllocator made with
//   tflite::MicroAllocator::Create(persistent, persistent_size,
//                                  non_persistent, non_persistent_size)
// (tensorflow/lite/micro/micro_allocator.h in Arduino_TensorFlowLite 2.4.0-ALPHA
// and Chirale_TensorFlowLite 2.0.0): its persistent data (tensor structs,
// op data, the allocator and planner objects themselves) goes to the model's
// own arena.persistent section, and its planned activations to the shared
// region that every model reuses, one after another. With that split,
// CommitStaticMemoryPlan resolves OfflineMemoryAllocation offsets relative to
// the start of the non-persistent buffer, so the converter's offsets are
// offsets into arena.shared; online-planned buffers (kernel scratch, e.g.
// CMSIS-NN im2col) are placed by the GreedyMemoryPlanner around them.
//
// one_at_a_time: one MicroInterpreter at a time, in one InterpreterSlot. Run
// destroys the previous model's interpreter and creates the next one just
// before it runs, on
//   tflite::MicroAllocator::Create(arena + shared.offset,
//                                  section end - shared.offset, &planner)
// (one arena: non-persistent head from shared.offset up, persistent tail from
// the model's section end down), so every model's persistent data reuses the
// same slot. Creation happens while stage buffers hold earlier patch outputs,
// and AllocateTensors writes into the non-persistent buffer (see
// ReservePlanner below and patch_runner_tflm.cpp): everything it writes stays
// below CreationLimit (arena.temp_reserve, or the lowest stage buffer holding
// data while that model is created), and Init checks that on the device by
// painting.
//
// Init() checks what the plan promises against what TFLM actually did: tensor
// counts, shapes / types / quantization (one input per model, one output per
// patch model, the plan's outputs for the tail; a stage-k patch model reads
// its source's quantization and writes stage k's), the tail's input tensor
// planned exactly at arena + the last stage's offset, and (probe) that no
// patch model has tensors or scratch buffers in the buffer of a stage live
// where it runs (StageLiveWhereModelRuns): for a stage-k model its source
// stage (PatchSource: which it reads from; k - 1 by default) and stage k (which holds the fill's earlier outputs),
// in an interleaved plan also, e.g., the last stage holding the earlier
// tunnels' boxes; an in-place model's own two stages are its tensors, the
// others it must leave alone too. Run() then executes the plan's patches in
// plan order (grouped by stage or interleaved) and the tail.
#ifndef TINYVISION_PATCH_RUNNER_TFLM_H_
#define TINYVISION_PATCH_RUNNER_TFLM_H_

#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/micro/compatibility.h"
#include "tensorflow/lite/micro/memory_planner/greedy_memory_planner.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_op_resolver.h"
#include "tinyvision_runtime.h"

namespace tinyvision {

// Storage for one interpreter object; the sketch declares one per model in
// resident mode and one in one_at_a_time mode (static, so no heap is used).
// `interpreter` is PatchRunner's: the object constructed in `bytes`, or null
// (the runner keeps no per-model storage of its own, so a plan may list many
// models).
struct InterpreterSlot {
  alignas(tflite::MicroInterpreter) unsigned char bytes[sizeof(tflite::MicroInterpreter)];
  tflite::MicroInterpreter* interpreter;
};

// TFLM's GreedyMemoryPlanner, kept below a limit. MicroAllocator's
// CommitStaticMemoryPlan hands the planner ALL the free non-persistent memory
// as scratch, and GreedyMemoryPlanner::Init spreads its five work arrays over
// all of it (at 0, 40, 50, 60 and 90 % of it): in one_at_a_time mode that
// would write into the stage buffers. This one plans the same way with only the
// scratch below `limit` (CreationLimit of the model created); too little room makes
// AllocateTensors fail ("Too many buffers") instead of writing above it.
class ReservePlanner : public tflite::GreedyMemoryPlanner {
 public:
  void set_limit(const uint8_t* limit) { limit_ = limit; }
  TfLiteStatus Init(unsigned char* scratch_buffer, int scratch_buffer_size) override;

 private:
  const uint8_t* limit_ = nullptr;
  TF_LITE_REMOVE_VIRTUAL_DELETE
};

// Returns a time stamp in microseconds (Arduino: micros); may be null.
typedef uint32_t (*MicrosFn)();

// One output of the tail model: int8, in the arena, valid until the next Run.
struct TailOutput {
  const int8_t* data;
  size_t size;  // bytes (= values)
  Quant quant;
};

struct RunResult {
  // The tail's output 0 (what the classifier and the decoders read); outputs[0] holds the same.
  const int8_t* scores;
  size_t num_scores;
  Quant score_quant;
  // Every output of the tail, in the model's output order (a detector may have one per scale):
  // outputs[0 .. num_outputs), num_outputs = the plan's tail num_outputs.
  TailOutput outputs[kMaxOutputs];
  uint16_t num_outputs;
  uint32_t patch_us;   // every patch of every stage: interpreter creation (one_at_a_time) + window copy + invoke
                       // + placement
  uint32_t copy_us;    // the part of patch_us spent copying windows and placing outputs
  uint32_t tail_us;    // the tail: creation (one_at_a_time), last-stage copy if not planned in place, Invoke
  uint32_t create_us;  // the part of patch_us + tail_us spent creating interpreters (0 in resident mode)
  uint32_t total_us;
};

// Called by Run with a stage's buffer each time a fill of it is complete
// (stage < plan.num_stages; just before the fill's first read: once per
// stage in a grouped plan, once per refill in an interleaved one, never half
// filled), and with each of the tail's outputs after the tail ran (stage ==
// plan.num_stages + i for output i, in output order), while they still hold
// those values: a later patch or the tail may reuse the memory. For harnesses
// that compare every buffer with another runtime (tflm_app/harness; the last
// call per stage is the buffer's final state); the sketch sets none.
typedef void (*BufferObserver)(void* context, uint16_t stage, const int8_t* data, size_t bytes);

// Arena bytes measured by painting: Init fills the arena with a pattern, and
// the bytes still holding it after allocation and runs were never touched.
// In one_at_a_time mode Init repaints the shared region before creating each
// model, so shared_used covers every model only after a Run.
struct ArenaUsage {
  uint32_t arena_size;           // plan.arena.size (what the sketch reserves)
  uint32_t shared_used;          // shared region: from its start to the last byte touched
  uint32_t persistent_used;      // resident: sum over sections, from the first byte touched to the section end;
                                 // one_at_a_time: the slot they share, from its first byte touched to its end
  uint32_t used;                 // shared_used + persistent_used
  uint32_t tflm_max_model_bytes; // largest MicroInterpreter::arena_used_bytes() over the models
  uint32_t creation_bytes;       // one_at_a_time: most shared bytes (from its start) one AllocateTensors
                                 // wrote, measured at Init; within each model's CreationLimit. 0: resident
};

class PatchRunner {
 public:
  // arena: alignas(16), at least plan.arena.size bytes. slots: num_slots >= InterpreterSlotsNeeded(plan).
  PatchRunner(const Plan& plan, const tflite::MicroOpResolver& resolver, uint8_t* arena, size_t arena_size,
              InterpreterSlot* slots, size_t num_slots, MicrosFn micros = nullptr);
  ~PatchRunner();
  PatchRunner(const PatchRunner&) = delete;
  PatchRunner& operator=(const PatchRunner&) = delete;

  // Validates the plan, creates and allocates every interpreter, checks the
  // tensors against the plan; with probe_stage, also invokes each patch model
  // once on a zero input and fails if the buffer of a stage live where it runs
  // changed (an in-place model: one other than its own two; one without such
  // a stage is not invoked). one_at_a_time: creates the models one after
  // another (destroying each again) and also fails if creating one wrote
  // shared bytes above its CreationLimit, i.e. could overwrite a stage buffer
  // during Run.
  Status Init(bool probe_stage = true);

  // Runs every patch in plan order on its source (PatchSource: `image`,
  // whose shape must be plan.image, or an earlier stage's buffer), then
  // the tail on the last stage. one_at_a_time: creates each model's
  // interpreter when the model changes from one patch to the next (in an
  // interleaved plan that is every patch), and the tail's before it runs.
  Status Run(const ImageSource& image, RunResult* result);

  ArenaUsage MeasureArena() const;

  void set_observer(BufferObserver observer, void* context) {
    observer_ = observer;
    observer_context_ = context;
  }

  // What the last failing call concerns (-1 if nothing in particular): Run,
  // the patch (or the tail model); Init, the model, or ValidatePlan's `where`.
  int32_t error_index() const { return error_index_; }

 private:
  bool one_at_a_time() const { return plan_.arena.interpreters == InterpreterMode::kOneAtATime; }
  const char* StageData(uint16_t stage) const {
    return reinterpret_cast<const char*>(arena_ + plan_.stages[stage].section.offset);
  }
  Status Fail(Status status, int32_t index);
  Status InitResident(bool probe_stage);
  Status InitOneAtATime(bool probe_stage);
  tflite::MicroAllocator* CreateAllocator(const Section& persistent, uint32_t creation_limit);
  size_t Slot(uint16_t m) const { return one_at_a_time() ? 0 : m; }
  tflite::MicroInterpreter* Interpreter(uint16_t m) const;
  Status CreateInterpreter(uint16_t m);
  void DestroyInterpreters();
  bool Guarded(uint16_t m, uint16_t stage) const;
  Status Activate(uint16_t m, uint32_t* create_us);
  Status CheckModel(uint16_t m);
  void Observe(uint16_t stage, const int8_t* data, size_t bytes) const;
  void ObserveStage(uint16_t k) const;
  Status ProbePatch(uint16_t m);
  uint32_t SharedTouched() const;
  uint32_t PersistentUsed() const;

  const Plan& plan_;
  const tflite::MicroOpResolver& resolver_;
  uint8_t* arena_;
  size_t arena_size_;
  InterpreterSlot* slots_;
  size_t num_slots_;
  MicrosFn micros_;
  BufferObserver observer_ = nullptr;
  void* observer_context_ = nullptr;
  int32_t live_model_ = -1;  // one_at_a_time: the model whose interpreter is in slot 0 (-1: none)
  ReservePlanner planner_;   // one_at_a_time: the live interpreter's planner
  uint32_t max_model_bytes_ = 0;
  uint32_t creation_bytes_ = 0;
  bool painted_ = false;
  bool ready_ = false;
  int32_t error_index_ = -1;
};

// Interpreter slots a plan needs: one per model (resident) or one (one_at_a_time).
inline size_t InterpreterSlotsNeeded(const Plan& plan) {
  return plan.arena.interpreters == InterpreterMode::kOneAtATime ? 1 : plan.num_models;
}

}  // namespace tinyvision

#endif  // TINYVISION_PATCH_RUNNER_TFLM_H_
