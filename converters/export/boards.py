"""Board profiles for the Arduino export: memory limits as data, not code.

Figures and their sources:

- ``ram_bytes`` / ``flash_bytes``: what the Arduino build lets a sketch use, from the
  board package's ``boards.txt`` (ArduinoCore-mbed: ``nano33ble.upload.maximum_data_size
  = 262144`` and ``nano33ble.upload.maximum_size = 983040``: the nRF52840's 1 MB flash
  minus the 64 KB the bootloader keeps).
- ``reserved_ram_bytes``: RAM kept free of tinyvision's buffers for the stack, the mbed
  OS core (USB serial, RTOS threads) and heap; a sketch whose static RAM leaves less
  than this is refused.
- ``code_flash_bytes``: an ESTIMATE of the firmware code that is not tinyvision's own:
  the Arduino mbed core with USB serial (~80 KB) plus TFLM's interpreter and the
  CMSIS-NN kernels of a small CNN's operators (~120 KB). tinyvision's runtime and
  data are added on top, measured with arm-none-eabi-size when the toolchain is
  installed (``runtime_code_bytes`` is the fallback when it is not).

``mps2-an386`` is no board a user deploys to: it is the emulator's machine (qemu's MPS2 AN386, the
Cortex-M4F ``tinyvision emulate`` runs) with all its memory, 4 MB of code memory at 0x0 and 4 MB of
RAM at 0x20000000, so that a model too large for the Nano (an unsplit baseline) runs on the same CPU
and library for comparison.
"""
import dataclasses

from tinyvision.errors import TinyVisionError


@dataclasses.dataclass(frozen=True)
class BoardProfile:
    name: str
    description: str
    ram_bytes: int
    flash_bytes: int
    reserved_ram_bytes: int
    code_flash_bytes: int
    # tinyvision_runtime.cpp text when no ARM toolchain measures it (arm-none-eabi-g++ 12.2 -Os:
    # 4,722 bytes, rounded up; the TFLM glue is counted separately by the exporter).
    runtime_code_bytes: int
    arch_flags: tuple  # arm-none-eabi-g++ flags for the size measurement

    @property
    def ram_available(self):
        """Bytes of static RAM tinyvision's arena, buffers and objects may take."""
        return self.ram_bytes - self.reserved_ram_bytes


BOARDS = {
    "nano33ble": BoardProfile(
        name="nano33ble",
        description="Arduino Nano 33 BLE / BLE Sense (nRF52840, Cortex-M4F 64 MHz)",
        ram_bytes=262144,
        flash_bytes=983040,
        reserved_ram_bytes=32 * 1024,
        code_flash_bytes=200 * 1024,
        runtime_code_bytes=6 * 1024,
        arch_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    ),
    "mps2-an386": BoardProfile(
        name="mps2-an386",
        description="qemu's MPS2 AN386 (Cortex-M4F) with its 4 MB of code memory and 4 MB of RAM (emulator only)",
        ram_bytes=4 * 1024 * 1024,
        flash_bytes=4 * 1024 * 1024,
        reserved_ram_bytes=32 * 1024,
        code_flash_bytes=200 * 1024,
        runtime_code_bytes=6 * 1024,
        arch_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    ),
}


def get_board(name):
    """The profile called ``name`` (a ``BoardProfile`` is returned as is, for custom boards);
    TinyVisionError naming the known boards otherwise."""
    if isinstance(name, BoardProfile):
        return name
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise TinyVisionError(f"unknown board {name!r}; known boards: {', '.join(sorted(BOARDS))}") from None
