// tinyvision: patch-based image classification with TensorFlow Lite Micro.
//
// Written by converters.export.arduino.export_arduino next to the runtime
// sources, the model arrays (model_data), the plan (plan_data), the operator
// list (model_ops.h) and a test image (test_image). Board: Arduino Nano 33 BLE
// (Sense). Library: Chirale_TensorFlowLite (Library Manager); #define
// TINYVISION_ARDUINO_TENSORFLOWLITE at the top of this file to build with the
// older Arduino_TensorFlowLite instead.
//
// By default it classifies the test image stored in flash, once a second.
// With TINYVISION_USE_CAMERA 1 (build_config.h; `tinyvision export --camera`
// sets it) it classifies OV7675 frames instead (Arduino_OV767X library,
// Nano 33 BLE Sense tinyML kit): QQVGA RGB565,
// centre-cropped to the model's aspect ratio and resized while each patch
// window is copied, so the only image buffer is the camera frame.
//
// Serial output, one line per inference:
//   class=<index> (<name>) score=<dequantized> label=<test image label> (<name>) latency_ms=<all>
//   patches_ms=<all patch stages> tail_ms=<tail> create_ms=<interpreter creation, part of both>
//   arena_used=<bytes touched>/<arena size>
// (create_ms is 0 unless the plan's arena.interpreters is "one_at_a_time").
// A centroid detector (its tail outputs a rows x cols x classes+1 heatmap) prints instead
//   detections=<n> latency_ms=... (as above)
// then one line per detection (centroid_decoder.h, at most kMaxCentroidDetections):
//   detection class=<index> (<name>) x=<cell column> y=<cell row> score=<dequantized>
// and a box detector (box_config.h: TINYVISION_BOX_DETECTOR 1) prints the same detections= line, then one
// line per box (box_decoder.h, score >= kTinyVisionBoxScoreThreshold, after NMS, at most kMaxBoxDetections):
//   detection class=<index> (<name>) box=<x0>,<y0>,<x1>,<y1> score=<objectness x class score>
// (box corners in pixels of the model's input image, 2 decimals).
// A tail with several outputs (a detector with one output per scale; no class names, no decoder) prints
// one line per output, in the model's output order:
//   output=<i> shape=<d0>x<d1>x... max=<dequantized largest value, 4 decimals> at=<its flat index>
// then, in place of class=... or detections=..., outputs=<count> latency_ms=... (as above);
// and one line per error:
//   tinyvision error: <cause> (index <i>)
// where <i> is the patch, model, persistent section or stage the cause is
// about (tinyvision::ValidatePlan, PatchRunner::error_index).

#include "build_config.h"

#ifdef TINYVISION_ARDUINO_TENSORFLOWLITE
#include <TensorFlowLite.h>
#else
#include <Chirale_TensorFlowLite.h>
#endif

#include "box_config.h"
#include "centroid_decoder.h"
#include "model_ops.h"
#include "patch_runner_tflm.h"
#include "plan_data.h"
#include "tensorflow/lite/micro/system_setup.h"

#if TINYVISION_BOX_DETECTOR
#include "box_decoder.h"
#endif

#if TINYVISION_USE_CAMERA
#include <Arduino_OV767X.h>
#else
#include "test_image.h"
#endif

// File-scope statics rather than an anonymous namespace: the Arduino
// builder generates prototypes for .ino functions and handles these best.
alignas(16) static uint8_t g_arena[kTinyVisionArenaSize];
static tinyvision::InterpreterSlot g_slots[kTinyVisionNumInterpreterSlots];
static TinyVisionOpResolver g_resolver;

static uint32_t Micros() { return micros(); }

static tinyvision::PatchRunner g_runner(kTinyVisionPlan, g_resolver, g_arena, sizeof(g_arena), g_slots,
                                        kTinyVisionNumInterpreterSlots, Micros);

#if TINYVISION_USE_CAMERA
static constexpr uint32_t kFrameWidth = 160;  // QQVGA
static constexpr uint32_t kFrameHeight = 120;
static uint8_t g_frame[kFrameWidth * kFrameHeight * 2];  // RGB565, high byte first
static int8_t g_lut[256];
static tinyvision::FrameImage g_frame_image;
#else
static tinyvision::ArrayImage g_test_image;
#endif

static tinyvision::ImageSource g_source;
static const char* g_error = nullptr;  // set once setup or a run fails; printed by loop
static int32_t g_error_index = -1;

static void SetError(const char* cause, int32_t index) {
  g_error = cause;
  g_error_index = index;
}

static void PrintError() {
  Serial.print("tinyvision error: ");
  Serial.print(g_error);
  if (g_error_index >= 0) {
    Serial.print(" (index ");
    Serial.print(g_error_index);
    Serial.print(")");
  }
  Serial.println();
}

static void PrintMs(const char* name, uint32_t us) {
  Serial.print(name);
  Serial.print(us / 1000.0f, 1);
}

// "<index> (<name>)", the name from the model's labels when the export knew them.
static void PrintClass(int32_t index) {
  Serial.print(index);
  if (index >= 0 && uint32_t(index) < kTinyVisionNumClassNames) {
    Serial.print(" (");
    Serial.print(kTinyVisionClassNames[index]);
    Serial.print(")");
  }
}

// The class probability a heatmap peak must reach to be a detection.
static constexpr float kCentroidThreshold = 0.5f;
static tinyvision::CentroidDetection g_detections[tinyvision::kMaxCentroidDetections];

// The tail's one output as a heatmap (rows, cols, channels), or false for a classifier's scores.
static bool HeatmapShape(uint32_t* rows, uint32_t* cols, uint32_t* channels) {
  const tinyvision::ModelInfo& tail = kTinyVisionPlan.models[kTinyVisionPlan.tail_model];
  if (tail.num_outputs != 1) return false;
  const tinyvision::Dims& out = tail.outputs[0];
  if (out.rank != 3 || out.d[0] * out.d[1] < 2) return false;
  *rows = out.d[0];
  *cols = out.d[1];
  *channels = out.d[2];
  return true;
}

static void PrintDetections(const tinyvision::RunResult& result, uint32_t rows, uint32_t cols, uint32_t channels,
                            uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) {
    const tinyvision::CentroidDetection& d = g_detections[i];
    Serial.print("detection class=");
    PrintClass(int32_t(d.cls) + 1);  // class names list the background first
    Serial.print(" x=");
    Serial.print(d.x);
    Serial.print(" y=");
    Serial.print(d.y);
    Serial.print(" score=");
    Serial.println(tinyvision::Dequantize(d.score, result.score_quant), 3);
  }
}

#if TINYVISION_BOX_DETECTOR
static tinyvision::BoxDetection g_boxes[tinyvision::kMaxBoxDetections];

// The boxes of the tail's output (rows x cols x anchors * (5 + classes)), decoded as export wrote the coding.
static uint32_t DecodeBoxDetections(const tinyvision::RunResult& result) {
  const tinyvision::Dims& out = kTinyVisionPlan.models[kTinyVisionPlan.tail_model].outputs[0];  // the only one
  const tinyvision::BoxDecoderConfig config = {
      out.d[0], out.d[1], kTinyVisionBoxAnchors, kTinyVisionBoxClasses, kTinyVisionBoxAnchorSizes,
      kTinyVisionBoxStride, kTinyVisionImageWidth, kTinyVisionImageHeight, result.score_quant.scale,
      result.score_quant.zero_point, kTinyVisionBoxScoreThreshold, kTinyVisionBoxIouThreshold};
  return tinyvision::DecodeBoxes(result.scores, result.num_scores, config, g_boxes, tinyvision::kMaxBoxDetections);
}

static void PrintBoxes(uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) {
    const tinyvision::BoxDetection& d = g_boxes[i];
    Serial.print("detection class=");
    PrintClass(d.cls);  // a box detector's class names are its object classes (no background)
    Serial.print(" box=");
    Serial.print(d.x0, 2);
    Serial.print(",");
    Serial.print(d.y0, 2);
    Serial.print(",");
    Serial.print(d.x1, 2);
    Serial.print(",");
    Serial.print(d.y1, 2);
    Serial.print(" score=");
    Serial.println(d.score, 3);
  }
}
#endif

// A tail with several outputs: per output, its shape and its largest value with where it is (the sketch
// knows no decoder for them; this shows each output is there and plausible).
static void PrintOutputs(const tinyvision::RunResult& result) {
  const tinyvision::ModelInfo& tail = kTinyVisionPlan.models[kTinyVisionPlan.tail_model];
  for (uint16_t i = 0; i < result.num_outputs; ++i) {
    const tinyvision::TailOutput& out = result.outputs[i];
    const tinyvision::Dims& dims = tail.outputs[i];
    const int32_t best = tinyvision::Argmax(out.data, out.size);  // Init checked the output is not empty
    Serial.print("output=");
    Serial.print(i);
    Serial.print(" shape=");
    for (uint8_t d = 0; d < dims.rank; ++d) {
      if (d > 0) Serial.print("x");
      Serial.print(dims.d[d]);
    }
    Serial.print(" max=");
    Serial.print(tinyvision::Dequantize(out.data[best], out.quant), 4);
    Serial.print(" at=");
    Serial.println(best);
  }
}

void setup() {
  tflite::InitializeTarget();  // starts Serial and waits up to 4 s for the monitor
  if (!TinyVisionAddOps(g_resolver)) {
    SetError("cannot register the model operators", -1);
    return;
  }
#if TINYVISION_USE_CAMERA
  if (!Camera.begin(QQVGA, RGB565, 1, OV7675)) {
    SetError("camera: Camera.begin(QQVGA, RGB565, 1, OV7675) failed", -1);
    return;
  }
  tinyvision::Status s = tinyvision::BuildPixelLut(kTinyVisionPlan.image_quant, kTinyVisionPixelMean,
                                                   kTinyVisionPixelStd, g_lut);
  if (s == tinyvision::Status::kOk) {
    const tinyvision::Shape3& image = kTinyVisionPlan.image;
    g_frame_image = {g_frame, sizeof(g_frame), kFrameWidth, kFrameHeight, tinyvision::PixelFormat::kRgb565Be,
                     tinyvision::CenterCrop(kFrameWidth, kFrameHeight, image.w, image.h), g_lut, image};
    s = tinyvision::MakeFrameImageSource(&g_frame_image, &g_source);
  }
#else
  g_test_image = {kTinyVisionTestImage, kTinyVisionTestImageSize, kTinyVisionPlan.image};
  tinyvision::Status s = tinyvision::MakeArrayImageSource(&g_test_image, &g_source);
#endif
  if (s != tinyvision::Status::kOk) {
    SetError(tinyvision::StatusString(s), -1);
    return;
  }
  s = g_runner.Init();
  if (s != tinyvision::Status::kOk) SetError(tinyvision::StatusString(s), g_runner.error_index());
}

void loop() {
  if (g_error != nullptr) {  // repeated, so a monitor opened late still sees it
    PrintError();
    delay(5000);
    return;
  }
#if TINYVISION_USE_CAMERA
  Camera.readFrame(g_frame);
#endif
  tinyvision::RunResult result;
  const tinyvision::Status s = g_runner.Run(g_source, &result);
  if (s != tinyvision::Status::kOk) {
    SetError(tinyvision::StatusString(s), g_runner.error_index());
    return;
  }
  const tinyvision::ArenaUsage arena = g_runner.MeasureArena();
  uint32_t rows = 0, cols = 0, channels = 0, detections = 0;
  bool heatmap = false;
  if (result.num_outputs > 1) {  // class names, heatmap and box decoders all read one output
    PrintOutputs(result);
    Serial.print("outputs=");
    Serial.print(result.num_outputs);
  } else {
#if TINYVISION_BOX_DETECTOR
    detections = DecodeBoxDetections(result);
    Serial.print("detections=");
    Serial.print(detections);
#else
    heatmap = HeatmapShape(&rows, &cols, &channels);
    if (heatmap) {
      const int8_t threshold = tinyvision::QuantizeThreshold(kCentroidThreshold, result.score_quant.scale,
                                                             result.score_quant.zero_point);
      detections = tinyvision::DecodeCentroids(result.scores, result.num_scores, rows, cols, channels, threshold,
                                               g_detections, tinyvision::kMaxCentroidDetections);
      Serial.print("detections=");
      Serial.print(detections);
    } else {
      const int32_t best = tinyvision::Argmax(result.scores, result.num_scores);
      Serial.print("class=");
      PrintClass(best);
      Serial.print(" score=");
      Serial.print(tinyvision::Dequantize(result.scores[best], result.score_quant), 3);
#if !TINYVISION_USE_CAMERA
      Serial.print(" label=");  // the expected class of the test image (-1: unknown)
      PrintClass(kTinyVisionTestLabel);
#endif
    }
#endif
  }
  PrintMs(" latency_ms=", result.total_us);
  PrintMs(" patches_ms=", result.patch_us);
  PrintMs(" tail_ms=", result.tail_us);
  PrintMs(" copy_ms=", result.copy_us);
  PrintMs(" create_ms=", result.create_us);
  Serial.print(" arena_used=");
  Serial.print(arena.used);
  Serial.print("/");
  Serial.println(arena.arena_size);
#if TINYVISION_BOX_DETECTOR
  PrintBoxes(detections);
#endif
  if (heatmap) PrintDetections(result, rows, cols, channels, detections);
  delay(1000);
}
