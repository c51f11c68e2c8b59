#!/usr/bin/env bash
# Installs tinyvision and everything it needs on a fresh Debian machine (root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# libusb: tflite-support's extension links it. The ARM toolchain builds tflm_app for the Cortex-M4, and
# qemu-system-arm runs it (tinyvision emulate, and the board-runtime tests); g++-multilib builds it for the host
# in 32-bit mode, where TFLM's objects in the arena have the board's sizes.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq libusb-1.0-0 g++ gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib \
  qemu-system-arm g++-multilib >/dev/null
python3 -m pip install -q --upgrade pip
python3 -m pip install -q -e ".[test]"   # editable: changes to the checkout take effect without reinstalling
# tflite-support 0.4.4 pins protobuf<4, which breaks TensorFlow: take it without its dependencies.
python3 -m pip install -q --no-deps "tflite-support==0.4.4"
