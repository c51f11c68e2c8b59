"""Entry point of the `tinyvision` command.

Each sub-command is a module of this package that defines its absl flags and a
``run(argv)`` function; only the chosen module is imported, so the commands'
flags never collide and start-up stays short.
"""
import importlib
import sys

COMMANDS = {
    "build": "build a zoo model and save it as .keras",
    "train": "train a .keras model (QAT by default) on the built-in data or data on disk",
    "convert": "convert a .keras model to int8 .tflite, or rewrite a .tflite (operator order, per-patch bundle)",
    "analyze": "measure a .tflite or a bundle on TFLM: arena, live-memory profile, plot",
    "export": "write C arrays of a .tflite, or an Arduino sketch of a bundle",
    "evaluate": "accuracy (centroid F1, box mAP for detectors) of float, int8 (TFLM) and bundle forms of a model on labelled data",
    "predict": "class names and scores (or detections) of image files from a .tflite, a bundle or a Keras model",
    "emulate": "run a bundle's Arduino sketch on an emulated Cortex-M4 (qemu) and compare with the host",
}

USAGE = "usage: tinyvision COMMAND [--flags]   (tinyvision COMMAND --help for its flags; --version)\n\ncommands:\n" + "\n".join(
    f"  {name:<9} {summary}" for name, summary in COMMANDS.items()
)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if len(argv) >= 2 else 2
    if argv[1] in ("--version", "version"):
        from tinyvision import __version__

        print(f"tinyvision {__version__}")
        return 0
    command = argv[1]
    if command not in COMMANDS:
        print(f"tinyvision: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"converters.cli.{command}")
    from converters.cli import runner

    return runner.run_command(module, [f"tinyvision {command}"] + argv[2:])


if __name__ == "__main__":
    sys.exit(main())
