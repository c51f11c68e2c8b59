// PatchRunner on TensorFlow Lite Micro's public API: one MicroInterpreter per
// model of a patch bundle, all in ONE tensor arena (docs/bundle-format.md).
//
// Each interpreter gets its own MicroAllocator made with
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
// Init() checks what the plan promises against what TFLM actually did: tensor
// shapes / types / quantization, the tail's input tensor planned exactly at
// arena + stage.offset, and (probe) that no patch model's tensors or scratch
// buffers write into the stage. Run() then executes the plan.
#ifndef TINYVISION_PATCH_RUNNER_TFLM_H_
#define TINYVISION_PATCH_RUNNER_TFLM_H_

#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_op_resolver.h"
#include "tinyvision_runtime.h"

namespace tinyvision {

// Storage for one interpreter object; the sketch declares one per model
// (static, so no heap is used).
struct InterpreterSlot {
  alignas(tflite::MicroInterpreter) unsigned char bytes[sizeof(tflite::MicroInterpreter)];
};

// Returns a time stamp in microseconds (Arduino: micros); may be null.
typedef uint32_t (*MicrosFn)();

struct RunResult {
  const int8_t* scores;  // the tail output (int8, in the arena; valid until the next Run)
  size_t num_scores;
  Quant score_quant;
  uint32_t patch_us;  // every patch: window copy + invoke + output placement
  uint32_t copy_us;   // the part of patch_us spent copying windows and placing outputs
  uint32_t tail_us;   // the tail's Invoke (after copying the stage into its input if not planned in place)
  uint32_t total_us;
};

// Arena bytes measured by painting: Init fills the arena with a pattern, and
// the bytes still holding it after allocation and runs were never touched.
struct ArenaUsage {
  uint32_t arena_size;           // plan.arena.size (what the sketch reserves)
  uint32_t shared_used;          // shared region: from its start to the last byte touched
  uint32_t persistent_used;      // sum over sections: from the first byte touched to the section end
  uint32_t used;                 // shared_used + persistent_used
  uint32_t tflm_max_model_bytes; // largest MicroInterpreter::arena_used_bytes() over the models
};

class PatchRunner {
 public:
  // arena: alignas(16), at least plan.arena.size bytes. slots: num_slots >= plan.num_models.
  PatchRunner(const Plan& plan, const tflite::MicroOpResolver& resolver, uint8_t* arena, size_t arena_size,
              InterpreterSlot* slots, size_t num_slots, MicrosFn micros = nullptr);
  ~PatchRunner();
  PatchRunner(const PatchRunner&) = delete;
  PatchRunner& operator=(const PatchRunner&) = delete;

  // Validates the plan, creates and allocates every interpreter, checks the
  // tensors against the plan; with probe_stage, also invokes each patch model
  // once on a zero input and fails if the stage buffer changed.
  Status Init(bool probe_stage = true);

  // Runs every patch on `image` (its shape must be plan.image), then the tail.
  Status Run(const ImageSource& image, RunResult* result);

  ArenaUsage MeasureArena() const;

  // The patch or model index the last failing call concerns (-1 if none).
  int32_t error_index() const { return error_index_; }

 private:
  Status Fail(Status status, int32_t index);
  Status CreateInterpreter(uint16_t m);
  Status CheckTensors();
  Status ProbeStage();

  const Plan& plan_;
  const tflite::MicroOpResolver& resolver_;
  uint8_t* arena_;
  size_t arena_size_;
  InterpreterSlot* slots_;
  size_t num_slots_;
  MicrosFn micros_;
  tflite::MicroInterpreter* interpreters_[kMaxModels] = {};
  bool painted_ = false;
  bool ready_ = false;
  int32_t error_index_ = -1;
};

}  // namespace tinyvision

#endif  // TINYVISION_PATCH_RUNNER_TFLM_H_
