"""Export a .tflite as C arrays (model_data.cc/.h) for TFLM, or a bundle as an Arduino sketch.

The arena-size constant is TFLM's own measurement of the model (smallest arena that runs on
the host), plus the head the board's CMSIS-NN kernel scratch adds, unless --arena_size is given.

  tinyvision export --model=out/model.tflite --output=out/c
  tinyvision export --model=out/bundle --arduino --output=out/sketch
"""
from absl import flags

flags.DEFINE_string("model", None, ".tflite file, or a bundle folder with --arduino")
flags.DEFINE_string("output", None, "output folder")
flags.DEFINE_integer("arena_size", None, "arena-size constant to write (default: measured on TFLM)")
flags.DEFINE_string("name", None, "C identifier prefix (default: from the file name)")
flags.DEFINE_bool("arduino", False, "write a complete Arduino sketch for a bundle")
flags.DEFINE_string("board", "nano33ble", "board profile for --arduino")
flags.DEFINE_bool("camera", False, "--arduino: build the sketch for OV7675 camera frames instead of the test image")
flags.DEFINE_bool("verify", True, "--arduino: refuse a bundle that is not bit-exact with its source .tflite on TFLM")
FLAGS = flags.FLAGS


def run():
    import os

    from converters.export.c_array import export_c_array
    from converters.ir import Model
    from tinyvision.errors import TinyVisionError
    from tinyvision.fileio import ensure_output_dir, read_tflite_bytes
    from tinyvision.analysis.report import board_arena

    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required")
    if FLAGS.camera and not FLAGS.arduino:
        raise TinyVisionError("--camera is a sketch option: use it with --arduino")
    if FLAGS.arduino:
        from converters.export.arduino import export_arduino

        if FLAGS.verify:
            _check_bit_exact(FLAGS.model)
        export_arduino(FLAGS.model, FLAGS.output, board=FLAGS.board, camera=FLAGS.camera)
        return
    if os.path.isdir(FLAGS.model):
        raise TinyVisionError(f"{FLAGS.model} is a folder: export a bundle with --arduino")
    model_bytes = read_tflite_bytes(FLAGS.model)
    name = os.path.basename(FLAGS.model)
    Model.from_bytes(model_bytes, name)  # the checks analyze and convert make, before anything is created
    if FLAGS.arena_size:
        arena, note = FLAGS.arena_size, "given"
    else:
        arena, host = board_arena(model_bytes, name=name)
        note = f"TFLM's smallest on the host {host:,} B + {arena - host:,} B of the board's CMSIS-NN scratch"
    created = not os.path.exists(FLAGS.output)
    ensure_output_dir(FLAGS.output)
    try:
        paths = export_c_array(FLAGS.model, FLAGS.output, arena, name=FLAGS.name)
    except TinyVisionError:
        if created and not os.listdir(FLAGS.output):
            os.rmdir(FLAGS.output)  # a refused export leaves no trace
        raise
    for path in paths:
        print(f"wrote {path}")
    print(f"arena size constant: {arena:,} B ({note})")


def _check_bit_exact(folder):
    """Refuse a bundle whose stage buffers differ from its source model's on TFLM (``analyze``'s bit_exact)."""
    from converters.cli.bundle_report import check_against_source
    from tinyvision.bundle import read_bundle
    from tinyvision.errors import TinyVisionError

    check = check_against_source(folder, read_bundle(folder))
    if check is None:
        raise TinyVisionError(f"{folder}: its source .tflite is not next to the bundle, so it cannot be checked "
                              "bit-exact (put it there, or give --noverify)")
    if not check.ok:
        raise TinyVisionError(f"{folder} is not bit-exact with its source, nothing written: {check.detail}")
    print(f"verified: {check.detail}")
