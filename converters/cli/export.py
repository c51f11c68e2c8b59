"""Export a .tflite as C arrays (model_data.cc/.h) for TFLM, or a bundle as an Arduino sketch.

The arena-size constant is TFLM's own measurement of the model (smallest arena that runs on
the host), plus the head the board's CMSIS-NN kernel scratch adds, unless --arena_size is given.

  tinyvision export --model=out/model.tflite --output=out/c
  tinyvision export --model=out/bundle --arduino --output=out/sketch
  tinyvision export --model=out/model.tflite --arduino --output=out/sketch   (the unsplit model)
"""
from absl import flags

flags.DEFINE_string("model", None, ".tflite file, or a bundle folder (or a .tflite: the whole model) with --arduino")
flags.DEFINE_string("output", None, "output folder")
flags.DEFINE_integer("arena_size", None, "arena-size constant to write (default: measured on TFLM)")
flags.DEFINE_string("name", None, "C identifier prefix (default: from the file name)")
flags.DEFINE_bool("arduino", False, "write a complete Arduino sketch for a bundle or a whole .tflite")
flags.DEFINE_string("board", "nano33ble", "board profile for --arduino")
flags.DEFINE_bool("camera", False, "--arduino: build the sketch for OV7675 camera frames instead of the test image")
FLAGS = flags.FLAGS


def run():
    import os

    from converters.export.c_array import export_c_array
    from tinyvision.errors import TinyVisionError
    from tinyvision.fileio import ensure_output_dir, read_tflite_bytes
    from tinyvision.analysis.report import board_arena

    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required")
    if FLAGS.camera and not FLAGS.arduino:
        raise TinyVisionError("--camera is a sketch option: use it with --arduino")
    if FLAGS.arduino:
        from converters.export.arduino import export_arduino

        export_arduino(FLAGS.model, FLAGS.output, board=FLAGS.board, camera=FLAGS.camera)
        return
    if os.path.isdir(FLAGS.model):
        raise TinyVisionError(f"{FLAGS.model} is a folder: export a bundle with --arduino")
    model_bytes = read_tflite_bytes(FLAGS.model)
    ensure_output_dir(FLAGS.output)
    if FLAGS.arena_size:
        arena, note = FLAGS.arena_size, "given"
    else:
        arena, host = board_arena(model_bytes, name=os.path.basename(FLAGS.model))
        note = f"TFLM's smallest on the host {host:,} B + {arena - host:,} B of the board's CMSIS-NN scratch"
    paths = export_c_array(FLAGS.model, FLAGS.output, arena, name=FLAGS.name)
    for path in paths:
        print(f"wrote {path}")
    print(f"arena size constant: {arena:,} B ({note})")
