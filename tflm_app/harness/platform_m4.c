// The harness on the emulated Cortex-M4F (qemu-system-arm -machine mps2-an386):
// start-up, a 256 KB RAM enforced by the MPU, semihosting output and an
// instruction clock.
#include <stdint.h>
#include <string.h>

#include "harness_platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void);
extern void exit(int);

#define REG(address) (*(volatile uint32_t*)(address))

// CMSDK APB timer 0 of the MPS2 board, clocked at its 25 MHz system clock: with
// -icount shift=0 qemu runs one instruction per virtual nanosecond, so a tick is
// 40 instructions. A 32-bit down-counter: 171 s of virtual time before it wraps.
#define TIMER0 0x40000000u
#define NS_PER_TICK 40u

// The board's RAM: the MPU allows 2^HARNESS_RAM_LOG2 bytes at 0x20000000 (the Nano's 256 KB unless
// the sketch was exported for a larger map) and nothing of the 4 MB behind it, so a run that would
// not fit the board faults here too.
#ifndef HARNESS_RAM_LOG2
#define HARNESS_RAM_LOG2 18
#endif
#define MPU_CTRL 0xE000ED94u
#define MPU_RNR 0xE000ED98u
#define MPU_RBAR 0xE000ED9Cu
#define MPU_RASR 0xE000EDA0u
#define RASR_SIZE(log2_bytes) (((log2_bytes) - 1u) << 1)
#define RASR_FULL_ACCESS (3u << 24)
#define RASR_NORMAL_CACHED ((1u << 17) | (1u << 16))
#define RASR_XN (1u << 28)

static void LimitRam(void) {
  REG(MPU_RNR) = 0;  // everything of SRAM above 0x20000000: no access
  REG(MPU_RBAR) = 0x20000000u;
  REG(MPU_RASR) = RASR_XN | RASR_SIZE(22) | 1u;
  REG(MPU_RNR) = 1;  // the board's RAM: read/write (higher region wins)
  REG(MPU_RBAR) = 0x20000000u;
  REG(MPU_RASR) = RASR_XN | RASR_FULL_ACCESS | RASR_NORMAL_CACHED | RASR_SIZE(HARNESS_RAM_LOG2) | 1u;
  REG(MPU_CTRL) = 5u;  // enable, with the default map for everything else
  __asm volatile("dsb\n isb");
}

uint64_t HarnessNanos(void) {
  static uint32_t last = 0;
  static uint64_t wraps = 0;
  const uint32_t ticks = 0xFFFFFFFFu - REG(TIMER0 + 4);
  if (ticks < last) wraps += 1ull << 32;
  last = ticks;
  return (wraps + ticks) * NS_PER_TICK;
}

int HarnessCountsInstructions(void) { return 1; }

static void SemihostingWrite0(const char* text) {
  register uint32_t op __asm("r0") = 0x04;  // SYS_WRITE0
  register const char* arg __asm("r1") = text;
  __asm volatile("bkpt 0xAB" : "+r"(op) : "r"(arg) : "memory");
}

void Reset_Handler(void) {
  memcpy(&_sdata, &_sidata, (size_t)((char*)&_edata - (char*)&_sdata));
  memset(&_sbss, 0, (size_t)((char*)&_ebss - (char*)&_sbss));
  REG(0xE000ED88u) |= 0xFu << 20;  // CPACR: the FPU
  __asm volatile("dsb\n isb");
  LimitRam();
  REG(TIMER0 + 8) = 0xFFFFFFFFu;  // RELOAD
  REG(TIMER0 + 4) = 0xFFFFFFFFu;  // VALUE
  REG(TIMER0 + 0) = 1u;           // CTRL: enable
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}

static void Fault_Handler(void) {
  SemihostingWrite0("\nharness fault: the program faulted (out of the board's RAM, or a bad access)\nharness exit 2\n");
  exit(2);
}

// newlib's __libc_init_array calls these (crti/crtn are not linked).
void _init(void) {}
void _fini(void) {}

__attribute__((section(".isr_vector"), used)) static void (*const kVectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,
};

// Static C++ objects register their destructors against it (crtbegin.o, not linked, defines it).
void* __dso_handle = 0;
