// tinyvision runtime core: the patch-bundle plan as C data and everything the
// device does around the interpreters, in plain C++17 (no TFLM, no Arduino,
// no heap, no exceptions), so it builds and is tested on the host with g++.
//
// A bundle (docs/bundle-format.md) splits a CNN into per-patch models, in one
// or more patch stages, and a tail model that share ONE tensor arena:
//
//   resident:      [ shared (non-persistent, every model plans into it) ][ persistent 0 ][ persistent 1 ] ...
//   one_at_a_time: [ temp_reserve | ... shared ... ][ persistent slot: every section starts here ]
//                          [ stage 0 ][ stage 1 ]  <- inside shared: stage k's patch outputs are placed in
//                                                     its buffer, stage k + 1's patches read their windows
//                                                     from it; the tail's input tensor is planned exactly
//                                                     at the last stage's buffer
//
// "resident" keeps one interpreter per model alive, each with its own
// persistent section. "one_at_a_time" creates a model's interpreter just
// before the model runs, in the one persistent slot, so the arena needs only
// the largest section; the stage buffers, which must survive those
// re-creations, lie above the bytes that TFLM's AllocateTensors writes at the
// bottom of the shared region for the models created while they hold data
// (CreationLimit).
//
// Per patch of stage k, in plan order: CopyWindow (rows of the patch's
// source -> model input; the source is the image or an earlier stage's
// buffer, PatchSource: by default stage k - 1's, the image for stage 0; see
// StageSource), Invoke, PlaceOutput (model output -> its
// box of stage k's buffer); then the tail runs on the last stage. A whole
// model (plan kind "whole_model": no stage, no patch, one tail model) gets
// the image copied into its input instead. Every copy
// here is bounds-checked against the buffer sizes passed in: a bad plan or a
// wrong image returns a Status and writes nothing outside the buffers it was
// given.
//
// Patches of different stages may interleave (tunnels: A0 B0 C0 A1 B1 C1 ...,
// each tunnel's segments one after another); the plan's grouped order (all of
// stage 0, then all of stage 1, ...) is one case of the same rules, which
// derive from the patch order alone. Positions 0 .. n - 1 are the patches in
// plan order, position n the tail. A patch of stage k WRITES stage k and
// READS its source stage j < k (PatchSource; unless it reads the image): by
// default k - 1, in a tunnel plan e.g. the tunnel's own link stage; the tail
// reads the last stage. The writes of a
// stage split into FILLS: maximal runs of its writes with no read of it in
// between; each fill covers the buffer exactly once and is read before the
// next fill starts (a stage's buffer is refilled, e.g. once per tunnel, or
// filled box by box while other stages are refilled). A stage is LIVE at
// position i when i lies between the first write of one of its fills and the
// last read of that fill (StageLive): stages live at a common position have
// disjoint buffers, and a patch model keeps its tensors and scratch out of
// the stages live where it runs.
#ifndef TINYVISION_RUNTIME_H_
#define TINYVISION_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyvision {

enum class Status : uint8_t {
  kOk = 0,
  kNullArgument,         // a required pointer is null
  kBadPlan,              // no models / patches / stages (except a whole model), too many models, unknown mode, too few slots
  kBadShape,             // a zero dimension, or a product that overflows 32 bits
  kBadOutputs,           // a patch model without exactly one output, or a tail with none or over kMaxOutputs
  kBadModelIndex,        // a patch or arena section names a model that does not exist
  kWrongModelRole,       // a patch names the tail model, or the tail a patch model
  kWindowOutsideImage,   // a stage-0 patch window (or a camera crop) reaches past the image
  kWindowOutsideStage,   // a patch window reaches past its source stage's buffer (PatchSource)
  kWindowShapeMismatch,  // window h/w (or the source's channels) differ from the model input
  kBoxOutsideStage,      // an output box reaches past its stage's buffer
  kBoxShapeMismatch,     // box h/w/channels differ from the model output
  kStageNotCovered,      // the output boxes of a stage overlap, or leave part of its buffer unfilled
  kStageShapeMismatch,   // the tail's input shape is not the last stage's shape
  kBadStageIndex,        // a patch names a stage that does not exist
  kStagesOutOfOrder,     // a stage is read before it is filled, or filled and never read
  kEmptyStage,           // a stage has no patch
  kBadModelStage,        // a patch model runs in patches of two stages, or in none
  kSectionOutsideArena,  // an arena section reaches past the arena
  kSectionsOverlap,      // a persistent section overlaps shared, or another one in resident mode
  kSectionBelowShared,   // one_at_a_time: a persistent section lies below the shared region
  kStageOutsideShared,   // a stage buffer is not inside the shared region
  kStageTooSmall,        // arena.stages[k].size < Hs * Ws * Cs of stage k
  kStagesOverlap,        // the buffers of two stages live at a common position (StageLive) overlap
  kMisaligned,           // an arena section offset is not 16-byte aligned
  kMissingSection,       // a model has no persistent section, or more than one
  kModelExceedsSection,  // a model's nonpersistent_bytes exceed the shared region, or its persistent_bytes its section
  kBadQuantization,      // scale <= 0, not finite, or zero point outside int8
  kImageSizeMismatch,    // the image source's shape differs from the plan's image
  kBufferTooSmall,       // a destination / source buffer is smaller than needed
  kBuffersOverlap,       // source and destination of a copy overlap
  kSourceFailed,         // the image source callback reported a failure
  kArenaTooSmall,        // the arena given is smaller than plan.arena.size
  // Reported by the TFLM glue (patch_runner_tflm.h):
  kSchemaMismatch,       // a model's flatbuffer schema version is not TFLM's
  kBadInPlace,           // an in-place model's patch is not a whole-stage patch reading a stage, alone in its fill
  kAllocateFailed,       // MicroInterpreter::AllocateTensors failed (section or temp_reserve too small, missing op)
  kCreationOutsideReserve,  // one_at_a_time: creating an interpreter wrote shared bytes above CreationLimit
  kTensorMismatch,       // a model's input/output tensors differ from the plan (count, shape, type, quantization)
  kStageNotPlanned,      // an in-place model's tensors are not on its stage buffers (or another's are); or
                         // the tail's input tensor is not at arena + the last stage's offset, or is there when
                         // the plan says it is not (arena.tail_input_at_stage false)
  kPatchTouchesStage,    // a patch model's tensors or scratch buffers write into the buffer of a stage live where
                         // it runs (always its source stage and k; an in-place model's own two excepted)
  kInvokeFailed,         // MicroInterpreter::Invoke failed
  kNotInitialized,       // Run before a successful Init
  kBadSource,            // a patch's source is neither the image nor a stage before its own (PatchInfo::source)
};

// One line naming the cause, for Serial / logs ("window outside image", ...).
const char* StatusString(Status status);

struct Quant {
  float scale;
  int32_t zero_point;
};

// A tensor shape without the batch dimension, as plan.json writes it
// (rank 1..4; d[rank..3] are unused).
struct Dims {
  uint8_t rank;
  uint32_t d[4];
};

// Height, width, channels of an NHWC int8 buffer without batch.
struct Shape3 {
  uint32_t h;
  uint32_t w;
  uint32_t c;
};

struct Window {  // region of a patch's source (the image, or an earlier stage's buffer) copied into its model input
  uint32_t x, y, w, h;
};

struct OutputBox {  // region of its stage's buffer a patch model's output fills
  uint32_t x, y, c, w, h, channels;
};

struct Section {  // bytes [offset, offset + size) of the arena
  uint32_t offset;
  uint32_t size;
};

enum class ModelRole : uint8_t { kPatch = 0, kTail = 1 };

struct ModelInfo {
  const char* name;
  const unsigned char* data;  // the .tflite flatbuffer (alignas(16), in flash)
  uint32_t data_size;
  ModelRole role;
  Dims input;                 // without batch, e.g. {3, {40, 40, 3}}
  // The outputs without batch, in the model's output order, e.g. {3, {9, 9, 16}} or {1, {10}}: exactly one
  // for a patch model (its box of the stage buffer), 1..kMaxOutputs for the tail (a detector may have one
  // output per scale). num_outputs Dims at `outputs`, in flash like the rest of the plan.
  const Dims* outputs;
  uint16_t num_outputs;
  uint32_t nonpersistent_bytes;  // TFLM head measured by the converter: at most arena.shared.size
  uint32_t persistent_bytes;     // TFLM tail measured by the converter: at most its persistent section
  // plan.json arena.in_place lists the model: each of its patches (stage k)
  // reads the whole of its source stage j (not the image) and fills the whole
  // of stage k, alone in its fill (one patch in a grouped plan, one per tunnel
  // in an interleaved one). Its offline plan puts its input tensor on stage j's buffer and
  // its output on stage k's, so the runtime copies neither.
  bool in_place;
};

// PatchInfo::source values besides a stage index (plan.json patches[i].source: -1, or absent).
constexpr int16_t kImageSource = -1;  // the patch reads its window from the image
constexpr int16_t kStageBefore = -2;  // absent in plan.json: stage - 1, the image for stage 0

struct PatchInfo {
  uint16_t model;
  uint16_t stage;  // the stage whose buffer `output` is in
  Window window;   // in the patch's source (PatchSource)
  OutputBox output;
  // Where `window` is read from: kImageSource, a stage j < stage, or kStageBefore (the default, so that
  // {model, stage, window, output} keeps its meaning).
  int16_t source = kStageBefore;
};

// The effective source of a patch: -1 for the image, else the index of the stage it reads.
int32_t PatchSource(const PatchInfo& patch);

// One patch stage: plan.json stages[k] and arena.stages[k].
struct StageInfo {
  Shape3 shape;     // the stage buffer, NHWC int8 without batch
  Quant quant;
  Section section;  // where the buffer lies in the arena: inside shared, 16-byte aligned, >= h * w * c bytes
};

struct PersistentSection {
  uint16_t model;
  Section section;
};

// plan.json arena.interpreters.
enum class InterpreterMode : uint8_t {
  kResident = 0,    // one interpreter per model, all alive; persistent sections disjoint
  kOneAtATime = 1,  // one interpreter at a time, re-created per model; sections share one slot
};

// The arena beyond the stage buffers (those are in Plan::stages).
struct ArenaLayout {
  uint32_t size;
  Section shared;
  const PersistentSection* persistent;
  uint16_t num_persistent;
  // plan.json arena.offline_plans (absent = true): the tail's input tensor is
  // planned at the last stage's section offset and reads that buffer in place.
  // False (bundles without offline plans): TFLM planned the tail's input
  // elsewhere in shared, and the runtime copies the last stage into it before
  // the tail runs.
  bool tail_input_at_stage;
  InterpreterMode interpreters;
  // one_at_a_time: bytes at the bottom of shared that TFLM's AllocateTensors
  // may write while stage buffers hold patch outputs (16-aligned; every stage
  // buffer lies above). Ignored in resident mode, where every interpreter is
  // created before any stage buffer is used.
  uint32_t temp_reserve;
};

struct Plan {
  Shape3 image;
  Quant image_quant;
  const StageInfo* stages;   // in execution order; the tail reads the last
  uint16_t num_stages;
  const ModelInfo* models;
  uint16_t num_models;
  const PatchInfo* patches;  // in execution order: grouped by stage ascending, or interleaved (tunnels)
  uint16_t num_patches;
  uint16_t tail_model;
  ArenaLayout arena;
};

// Largest number of models a plan may list (a tunnel plan has one per
// segment and tunnel). Nothing is sized by it: the interpreters live in the
// InterpreterSlots the sketch declares (one per model in resident mode).
#ifndef TINYVISION_MAX_MODELS
#define TINYVISION_MAX_MODELS 1024
#endif
constexpr uint16_t kMaxModels = TINYVISION_MAX_MODELS;
// Largest number of outputs the tail may have (RunResult keeps one entry per
// output in fixed storage).
#ifndef TINYVISION_MAX_OUTPUTS
#define TINYVISION_MAX_OUTPUTS 8
#endif
constexpr uint16_t kMaxOutputs = TINYVISION_MAX_OUTPUTS;
static_assert(kMaxOutputs >= 1, "TINYVISION_MAX_OUTPUTS: the tail has at least one output");
constexpr uint32_t kArenaAlignment = 16;

// Checks every rule of docs/bundle-format.md that the plan alone decides:
// - at least one stage, every stage with at least one patch (kEmptyStage),
//   every patch model in the patches of exactly one stage (kBadModelStage);
// - windows inside their source (PatchSource: the image, or an earlier
//   stage's buffer; kWindowOutsideImage / kWindowOutsideStage), with the model's input height/width and the source's
//   channels;
// - every patch model has one output, the tail 1..kMaxOutputs, every shape
//   rank 1..4 without a zero dimension;
// - output boxes inside their stage's buffer, with the model's output shape;
//   each fill of a stage (the header comment) covers its buffer exactly once
//   (kStageNotCovered, where = the stage);
// - no stage is read before its first write, and every fill is read: by a
//   later patch that has the stage as its source, the last stage by the tail
//   (kStagesOutOfOrder, where = the reading patch, or the unread fill's last
//   write);
// - every patch's source is the image or a stage before its own (kBadSource),
//   all the patches of a model have one source (kBadModelStage);
// - an in-place model's every patch reads the whole of its source stage,
//   fills the whole of stage k and is alone in its fill; the tail is not in
//   place (kBadInPlace);
// - the tail's input is the last stage's shape; quantizations are valid;
// - one persistent section per model; sections 16-byte aligned, inside the
//   arena and disjoint from shared; every stage buffer inside shared and at
//   least Hs * Ws * Cs bytes; the buffers of two stages live at a common
//   position disjoint (kStagesOverlap, where = the higher stage): in a
//   grouped plan stages k and k + 1, while a stage may reuse the memory of
//   stages before k - 1;
// - resident: persistent sections pairwise disjoint. one_at_a_time: sections
//   may overlap (only one interpreter exists at a time) but lie above shared,
//   temp_reserve is 16-byte aligned (each model's creation is checked against
//   CreationLimit as it is created).
// On failure `where` (if given) receives the index of the offending entry of
// the list the status is about: a patch (windows, boxes, patch order), a
// model, a persistent section, or a stage (shape, quantization, coverage,
// arena section, a stage without patches); -1 when the failure is not tied
// to one (the image, the tail index, the shared region, temp_reserve).
Status ValidatePlan(const Plan& plan, int32_t* where = nullptr);

// The shape / quantization of a patch source (PatchSource): the image for
// source -1, else stage `source` (< plan.num_stages).
Shape3 SourceShape(const Plan& plan, int32_t source);
Quant SourceQuant(const Plan& plan, int32_t source);

// The stage whose patches run `model`, or -1 when no patch runs it (the
// tail). A valid plan gives every patch model exactly one stage.
int32_t ModelStage(const Plan& plan, uint16_t model);

// The source (PatchSource) of the patches that run `model`, or kStageBefore
// when no patch runs it (the tail). A valid plan gives all the patches of a
// model one source: a model serves one stage from one source.
int32_t ModelSource(const Plan& plan, uint16_t model);

// Whether `stage`'s buffer holds data needed later at `position` (0 ..
// num_patches - 1: a patch in plan order; num_patches: the tail): position
// lies between the first write of one of the stage's fills and that fill's
// last read (the reads of a fill: the reads after its last write, up to the
// next fill's first write). O(num_patches), no state.
bool StageLive(const Plan& plan, uint16_t stage, uint32_t position);

// Whether `stage` is live (StageLive) at some position where `model` runs
// (its patches; position num_patches for the tail): the stages whose buffers
// the model must leave alone, besides those an in-place model reads and
// writes.
bool StageLiveWhereModelRuns(const Plan& plan, uint16_t model, uint16_t stage);

// Whether `stage`'s buffer has just been filled when `position` runs: that
// position reads the stage (a patch whose source it is, or the tail for the last
// stage) and is the first read of its fill. A valid plan's buffer is
// complete then (Run shows it to its BufferObserver), never half filled.
bool FillCompleteAt(const Plan& plan, uint16_t stage, uint32_t position);

// one_at_a_time: the bytes from shared.offset that creating `model`'s
// interpreter may write: arena.temp_reserve, or less where a stage buffer
// live at a position where the model runs (StageLiveWhereModelRuns) starts
// lower. In a grouped plan: stages k - 1 and k for a stage-k patch model
// (its source stage and k in general),
// the last stage for the tail; in an interleaved one also, e.g., the last
// stage, which holds the earlier tunnels' boxes while stage 0 is refilled.
uint32_t CreationLimit(const Plan& plan, uint16_t model);

// ---------------------------------------------------------------------------
// Image sources: a callback that fills pixels of one image row.
//
// read_row(ctx, y, x, width, dst) writes `width` pixels of row `y` starting at
// column `x` (width * shape.c int8 values) to dst and returns false on failure.
// CopyWindow only calls it with y < shape.h and x + width <= shape.w, and with
// dst pointing at width * shape.c writable bytes.
typedef bool (*ReadRowFn)(void* ctx, uint32_t y, uint32_t x, uint32_t width, int8_t* dst);

struct ImageSource {
  ReadRowFn read_row;
  void* ctx;
  Shape3 shape;  // the image the callback serves (must equal plan.image)
};

// An int8 NHWC image already quantized with the plan's image quantization,
// e.g. a test image in flash.
struct ArrayImage {
  const int8_t* data;
  size_t size;  // bytes available at data (checked against h * w * c)
  Shape3 shape;
};
Status MakeArrayImageSource(const ArrayImage* image, ImageSource* source);

// The image source of a patch source (PatchSource, a valid plan): `image`
// for source -1 (its shape must be plan.image), else an ArrayImage over stage
// `source`'s buffer at arena + plan.stages[source].section.offset, which
// *view holds and must outlive *source (kBadStageIndex for any other value).
// arena_size: bytes at arena; the section must lie inside them.
Status StageSource(const Plan& plan, int32_t source_index, const ImageSource& image, const int8_t* arena,
                   size_t arena_size, ArrayImage* view, ImageSource* source);

// Copies `window` of the source (rows of window.w pixels, C channels each)
// into dst (dst_size bytes, needs window.h * window.w * C). Checks the window
// is inside source.shape before reading anything; an ArrayImage source also
// refuses a dst that overlaps its data (kSourceFailed).
Status CopyWindow(const ImageSource& source, const Window& window, int8_t* dst, size_t dst_size);

// Copies a model output (box.h x box.w x box.channels int8, NHWC) into `box`
// of a stage buffer (stage.h x stage.w x stage.c, stage_size bytes):
// row by row, `channels` contiguous values at channel offset box.c.
Status PlaceOutput(const int8_t* src, size_t src_size, const OutputBox& box, const Shape3& stage,
                   int8_t* stage_buffer, size_t stage_size);

// ---------------------------------------------------------------------------
// Quantization (float32 arithmetic, round half away from zero, clamp to int8).
int8_t Quantize(float value, const Quant& quant);
float Dequantize(int8_t value, const Quant& quant);
// Checks scale is finite and > 0 and zero_point in [-128, 127].
bool ValidQuant(const Quant& quant);

// ---------------------------------------------------------------------------
// Camera / raw frame preprocessing.
//
// Pixel p (0..255) maps to Quantize((p - mean) / std, quant); tinyvision's
// models are trained on (p - 127.5) / 127.5. The 256 results go in a table
// once, so per-pixel work is a lookup.
Status BuildPixelLut(const Quant& quant, float mean, float std, int8_t lut[256]);

enum class PixelFormat : uint8_t {
  kRgb888 = 0,    // 3 bytes per pixel: R, G, B
  kRgb565Be = 1,  // 2 bytes, high byte first (OV767X readFrame)
  kRgb565Le = 2,  // 2 bytes, low byte first
  kGray8 = 3,     // 1 byte per pixel
};
uint32_t BytesPerPixel(PixelFormat format);

// Reads the model image (out_shape, C = 1 or 3) from a raw frame of another
// size: the `crop` region of the frame, nearest-neighbour resized (frame row
// = crop.y + y * crop.h / out_h, same for columns), RGB565 expanded to 8 bits
// per channel ((v << 3) | (v >> 2) for 5 bits, (v << 2) | (v >> 4) for 6),
// grey from RGB as (77 R + 150 G + 29 B) >> 8, grey to RGB by repetition,
// then the pixel LUT. The window copy pulls rows straight from the camera
// frame: no full-size int8 image is ever stored.
struct FrameImage {
  const uint8_t* data;
  size_t size;  // bytes at data (checked against width * height * bytes per pixel)
  uint32_t width;
  uint32_t height;
  PixelFormat format;
  Window crop;        // inside the frame; CenterCrop() keeps the model's aspect ratio
  const int8_t* lut;  // 256 entries from BuildPixelLut
  Shape3 out_shape;   // the model image: plan.image
};
Status MakeFrameImageSource(const FrameImage* frame, ImageSource* source);

// The largest centred region of a frame_w x frame_h frame with the aspect
// ratio of out_w x out_h (integer division: width = frame_h * out_w / out_h
// when the frame is wider, else height = frame_w * out_h / out_w).
Window CenterCrop(uint32_t frame_w, uint32_t frame_h, uint32_t out_w, uint32_t out_h);

// Whole-image preprocessing through any source: dst gets h * w * c int8.
Status ReadImage(const ImageSource& source, int8_t* dst, size_t dst_size);

// ---------------------------------------------------------------------------
// Scores.
// Index of the largest value (the first one on ties); -1 if count == 0.
int32_t Argmax(const int8_t* scores, size_t count);
// The k largest values, best first (ties: lower index first). Writes
// min(k, count) indices to top and returns that number.
size_t TopK(const int8_t* scores, size_t count, size_t k, uint16_t* top);

}  // namespace tinyvision

#endif  // TINYVISION_RUNTIME_H_
