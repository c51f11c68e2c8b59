// Included by the Arduino TFLM library's peripherals.h; the harness has no I2C.
