// Runs an exported sketch once off the board: on the host (g++) or on the emulated
// Cortex-M4F (arm-none-eabi-g++, qemu-system-arm -machine mps2-an386, 256 KB RAM).
// The sketch itself (TINYVISION_SKETCH: the path of its .ino) is compiled into this
// file, so setup() and one loop() run exactly the code the board runs, with the
// Arduino API of Arduino.h. On top of the sketch's own Serial lines it prints
// (tinyvision.runtime.board parses them):
//   buffer <stage> <hex>      each stage buffer as soon as a fill of it is complete (once per stage
//                             in a grouped plan, once per refill in an interleaved one: the last
//                             line per stage is its final state)
//   buffer scores <hex>       the tail's output 0
//   buffer scores<i> <hex>    the tail's output i >= 1 (scores1, scores2, ...), for a
//                             tail with several outputs
//   clock <name> <ns>         setup, each stage, the tail (tail0, once, at output 0):
//                             clock (emulator: instructions) spent, the printing above excluded.
//                             stage<k>: with each buffer line of stage k, the clock since the
//                             previous buffer line added to what stage k had, so that the last
//                             line per stage is its total and the stages' totals and the tail's
//                             add up to the inference. In an interleaved plan that time also holds
//                             the patches of other stages run since the previous buffer line (a
//                             tunnel's last segment counts to its next tunnel's stage 0)
//   arena size=<> shared=<> persistent=<> used=<> creation=<> tflm_max=<>
//   harness exit <code>       0: an inference ran; 1: the sketch reported an error
// Built with -DTINYVISION_HARNESS_PROFILE, it then creates and invokes each model
// of the plan once more, on its own, and prints (before the exit line):
//   profile model <m> create <ns>          its MicroInterpreter's construction and AllocateTensors
//   profile op <m> <index> <name> <ns>     each operator of its Invoke, in order
//   profile model <m> failed               it could not be created or invoked on its own
#include <string.h>

#include "Arduino.h"
#include "harness_platform.h"

#include TINYVISION_SKETCH

HarnessSerial Serial;

namespace {

uint64_t g_excluded = 0;  // clock spent printing buffers, left out of micros() and the clock lines
uint64_t g_mark = 0;      // clock at the previous buffer line
// Each stage's clock so far (an interleaved plan shows a stage once per fill). A stage past these
// (no bundle has that many) prints the clock since the previous buffer line alone.
constexpr uint16_t kClockedStages = 32;
uint64_t g_stage_clock[kClockedStages] = {};

uint64_t Clock() { return HarnessNanos() - g_excluded; }

void PrintClock(const char* name, uint32_t index, uint64_t ns) {
  printf("clock %s%lu %llu\n", name, static_cast<unsigned long>(index), static_cast<unsigned long long>(ns));
}

void PrintHex(const int8_t* data, size_t bytes) {
  static const char kDigits[] = "0123456789abcdef";
  char line[129];
  for (size_t i = 0; i < bytes; i += 64) {
    const size_t n = bytes - i < 64 ? bytes - i : 64;
    for (size_t j = 0; j < n; ++j) {
      const uint8_t v = static_cast<uint8_t>(data[i + j]);
      line[2 * j] = kDigits[v >> 4];
      line[2 * j + 1] = kDigits[v & 15];
    }
    fwrite(line, 1, 2 * n, stdout);
  }
}

// The runner's BufferObserver: stage k < num_stages is stage k's buffer, num_stages + i the tail's output i.
void ObserveBuffer(void*, uint16_t stage, const int8_t* data, size_t bytes) {
  const uint64_t now = Clock();
  if (stage == kTinyVisionPlan.num_stages) {  // output 0: the tail has just run
    PrintClock("tail", 0, now - g_mark);
    printf("buffer scores ");
  } else if (stage > kTinyVisionPlan.num_stages) {  // the tail's further outputs: nothing ran since output 0
    printf("buffer scores%u ", unsigned(stage - kTinyVisionPlan.num_stages));
  } else {
    uint64_t spent = now - g_mark;
    if (stage < kClockedStages) spent = g_stage_clock[stage] += spent;
    PrintClock("stage", stage, spent);
    printf("buffer %u ", unsigned(stage));
  }
  PrintHex(data, bytes);
  printf("\n");
  g_excluded += HarnessNanos() - g_excluded - now;
  g_mark = Clock();
}

#ifdef TINYVISION_HARNESS_PROFILE
// The clock of each operator of one Invoke, printed once it returns (printing
// during the run would be counted).
class OpClock : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (count_ < kMaxEvents) {
      tags_[count_] = tag;
      begin_[count_] = HarnessNanos();
    }
    return count_++;
  }
  void EndEvent(uint32_t handle) override {
    if (handle < kMaxEvents) spent_[handle] = HarnessNanos() - begin_[handle];
  }
  void Reset() { count_ = 0; }
  void Print(uint16_t model) const {
    for (uint32_t i = 0; i < count_ && i < kMaxEvents; ++i) {
      printf("profile op %u %lu %s %llu\n", unsigned(model), static_cast<unsigned long>(i), tags_[i],
             static_cast<unsigned long long>(spent_[i]));
    }
  }

 private:
  static constexpr uint32_t kMaxEvents = 512;
  const char* tags_[kMaxEvents] = {};
  uint64_t begin_[kMaxEvents] = {};
  uint64_t spent_[kMaxEvents] = {};
  uint32_t count_ = 0;
};

// After the inference: each model alone in the sketch's arena (whose contents
// are no longer needed), with a fresh interpreter as one_at_a_time mode makes.
void ProfileModels() {
  static OpClock clock;
  for (uint16_t m = 0; m < kTinyVisionPlan.num_models; ++m) {
    const tflite::Model* model = tflite::GetModel(kTinyVisionPlan.models[m].data);
    const uint64_t start = HarnessNanos();
    tflite::MicroInterpreter interpreter(model, g_resolver, g_arena, sizeof(g_arena), nullptr, &clock);
    const bool created = interpreter.AllocateTensors() == kTfLiteOk;
    const uint64_t create = HarnessNanos() - start;
    clock.Reset();
    if (!created || interpreter.Invoke() != kTfLiteOk) {
      printf("profile model %u failed\n", unsigned(m));
      continue;
    }
    printf("profile model %u create %llu\n", unsigned(m), static_cast<unsigned long long>(create));
    clock.Print(m);
  }
}
#endif

}  // namespace

uint32_t micros() { return uint32_t(Clock() / 1000u); }
uint32_t millis() { return uint32_t(Clock() / 1000000u); }

int main() {
  printf("harness %s\n", HarnessCountsInstructions() ? "instructions" : "wall clock");
  const uint64_t start = Clock();
  setup();
  PrintClock("setup", 0, Clock() - start);
  g_runner.set_observer(ObserveBuffer, nullptr);
  g_mark = Clock();
  loop();  // prints the sketch's line: the result, or the error setup or Run met
  const tinyvision::ArenaUsage arena = g_runner.MeasureArena();
  printf("arena size=%lu shared=%lu persistent=%lu used=%lu creation=%lu tflm_max=%lu\n",
         static_cast<unsigned long>(arena.arena_size), static_cast<unsigned long>(arena.shared_used),
         static_cast<unsigned long>(arena.persistent_used), static_cast<unsigned long>(arena.used),
         static_cast<unsigned long>(arena.creation_bytes), static_cast<unsigned long>(arena.tflm_max_model_bytes));
  const int code = g_error == nullptr ? 0 : 1;
#ifdef TINYVISION_HARNESS_PROFILE
  if (code == 0) ProfileModels();
#endif
  printf("harness exit %d\n", code);
  fflush(stdout);
  return code;
}

// The two functions of the library's system_setup.cpp (which includes the real Arduino.h).
extern "C" void DebugLog(const char* s) { Serial.print(s); }
namespace tflite {
void InitializeTarget() {}
}  // namespace tflite
