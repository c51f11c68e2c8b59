// What the harness needs from where it runs (platform_host.cpp, platform_m4.c).
#ifndef TINYVISION_HARNESS_PLATFORM_H_
#define TINYVISION_HARNESS_PLATFORM_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Nanoseconds of the platform's clock. Emulated Cortex-M4 (qemu -icount shift=0): virtual
// nanoseconds, i.e. instructions executed (to the 40 of one 25 MHz timer tick). Host: wall clock.
uint64_t HarnessNanos(void);

// 1 when HarnessNanos counts instructions (the emulator), 0 for a wall clock.
int HarnessCountsInstructions(void);

#ifdef __cplusplus
}
#endif

#endif  // TINYVISION_HARNESS_PLATFORM_H_
