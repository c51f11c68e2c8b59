// The part of the Arduino API an exported tinyvision sketch uses, for running the
// sketch off the board (tflm_app/harness: on the host, or on the emulated Cortex-M4).
// Serial prints to stdout (semihosting on the emulator); micros() is the harness clock
// (harness_platform.h) without the time the harness itself spends printing buffers.
#ifndef TINYVISION_HARNESS_ARDUINO_H_
#define TINYVISION_HARNESS_ARDUINO_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <type_traits>

uint32_t micros();
uint32_t millis();
inline void delay(uint32_t) {}  // one loop() per run: nothing to wait for

class HarnessSerial {
 public:
  void begin(unsigned long) {}
  explicit operator bool() const { return true; }
  size_t print(const char* s) { return size_t(printf("%s", s)); }
  size_t print(double v, int digits) { return size_t(printf("%.*f", digits, v)); }
  template <typename T>
  size_t print(T v) {
    static_assert(std::is_arithmetic<T>::value, "print takes text or numbers");
    if constexpr (std::is_floating_point<T>::value) {
      return print(double(v), 2);
    } else if constexpr (std::is_signed<T>::value) {
      return size_t(printf("%lld", static_cast<long long>(v)));
    } else {
      return size_t(printf("%llu", static_cast<unsigned long long>(v)));
    }
  }
  template <typename... T>
  size_t println(T... v) {
    size_t n = 0;
    if constexpr (sizeof...(T) > 0) n = print(v...);
    return n + print("\n");
  }
};

extern HarnessSerial Serial;

#endif  // TINYVISION_HARNESS_ARDUINO_H_
