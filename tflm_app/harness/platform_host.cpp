// The harness on the host: a wall clock.
#include <time.h>

#include "harness_platform.h"

extern "C" uint64_t HarnessNanos(void) {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return uint64_t(t.tv_sec) * 1000000000u + uint64_t(t.tv_nsec);
}

extern "C" int HarnessCountsInstructions(void) { return 0; }
