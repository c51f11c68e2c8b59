"""Bundles on the board's own runtime: host build (one arena, -m32) and the emulated Cortex-M4F.

    python benchmarks/board_emulator.py [--arduino_lib=PATH] BUNDLE [BUNDLE ...]

For each bundle folder: the exported sketch runs on the Arduino TFLM library (default
``~/Arduino/libraries/Chirale_TensorFlowLite``) built for the host and for the Cortex-M4F under
qemu-system-arm (tinyvision.runtime.board), next to the host PatchRunner (tflite-micro). Printed per
bundle: stage buffers and scores against the host, arena bytes TFLM touched against the exported
arena constant, and the emulator's instructions for setup, each stage, the tail and interpreter
creation. First the library builds: their time, or "cached".
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyvision.runtime import arduino_lib  # noqa: E402
from tinyvision.runtime.board import run_bundle  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arduino_lib", default=arduino_lib.default_lib_dir())
    parser.add_argument("bundles", nargs="+")
    args = parser.parse_args()
    for target in ("host", "cortex-m4"):
        lib = arduino_lib.build_library(args.arduino_lib, target)
        print(f"library {target}: " + ("cached" if lib.cached else f"built in {lib.seconds:.0f} s") + f" ({lib.archive})")
    for folder in args.bundles:
        start = time.monotonic()
        results = run_bundle(folder, ("host", "cortex-m4"), args.arduino_lib)
        print(f"\n{folder} ({time.monotonic() - start:.0f} s)")
        for target, e in results.items():
            a = e.run.arena
            print(f"  {target:<10} stages {'bit-exact' if not any(e.stage_mismatches) else e.stage_mismatches}  "
                  f"scores {e.run.scores.tolist()} host {e.host_scores.tolist()}  arena touched {a['used']:,} of "
                  f"{a['size']:,} B (shared {a['shared']:,}, persistent {a['persistent']:,}, creation "
                  f"{a['creation']:,})")
        counts = results["cortex-m4"].run.instructions()
        print("  instructions " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()))


if __name__ == "__main__":
    main()
