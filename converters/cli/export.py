"""Export a .tflite as C arrays (model_data.cc/.h) for TFLM, or a bundle as an Arduino sketch.

The arena-size constant is TFLM's own measurement of the model (smallest arena that runs on
the host), plus the head the board's CMSIS-NN kernel scratch adds, unless --arena_size is given.

  tinyvision export --model=out/model.tflite --output=out/c
  tinyvision export --model=out/bundle --arduino --output=out/sketch
  tinyvision export --model=out/bundle --arduino --test_image=photos/cat/01.jpg --output=out/sketch
  tinyvision export --model=out/model.tflite --arduino --output=out/sketch   (the unsplit model)

The sketch prints class names: --labels (a file, one name per line), else the model's metadata labels
(from the dataset it was converted with).
Its test image is --test_image, else the first held-out image of --dataset, else a built-in sample.
"""
from absl import flags

flags.DEFINE_string("model", None, "(required) .tflite file; with --arduino a bundle folder or a .tflite (the whole model)")
flags.DEFINE_string("output", None, "(required) output folder")
flags.DEFINE_integer("arena_size", None, "arena-size constant to write (default: measured on TFLM)")
flags.DEFINE_string("name", None, "C identifier prefix (default: from the file name)")
flags.DEFINE_bool("arduino", False, "write a complete Arduino sketch for a bundle or a whole .tflite")
flags.DEFINE_string("board", "nano33ble", "board profile for --arduino")
flags.DEFINE_bool("camera", False, "--arduino: build the sketch for OV7675 camera frames instead of the test image")
flags.DEFINE_bool("verify", True, "--arduino: refuse a bundle that is not bit-exact with its source .tflite on TFLM")
flags.DEFINE_string("test_image", None, "--arduino: JPEG/PNG stored in flash as the sketch's test image")
flags.DEFINE_string("test_label", None, "--arduino: the test image's class (name or index); default: its folder's "
                    "name when that is a class, or the dataset's label")
flags.DEFINE_string("dataset", None, "--arduino: take the test image from this dataset (the one the model was "
                    "trained on): a folder:PATH's first held-out image, or a built-in sample")
flags.DEFINE_string("labels", None, "--arduino: class names file (one per line) for a model without metadata "
                    "labels, printed by the sketch")
flags.DEFINE_float("validation_split", 0.2, "--arduino with a folder: --dataset: the held-out fraction (as train)")
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

        if FLAGS.verify and os.path.isdir(FLAGS.model):  # a .tflite runs whole, as it is: nothing to check
            _check_bit_exact(FLAGS.model)
        test_image = FLAGS.test_image or _dataset_test_image(FLAGS.dataset, FLAGS.validation_split)
        export_arduino(FLAGS.model, FLAGS.output, board=FLAGS.board, camera=FLAGS.camera, test_image=test_image,
                       test_label=FLAGS.test_label, class_names=_labels_file(FLAGS.labels))
        return
    if FLAGS.test_image or FLAGS.test_label or FLAGS.dataset or FLAGS.labels:
        raise TinyVisionError("--test_image, --test_label, --dataset and --labels are sketch options: use them with "
                              "--arduino")
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


def _labels_file(path):
    """The class names of a --labels file (one per line, blank lines at the end dropped), or None without one."""
    if path is None:
        return None
    from tinyvision.fileio import read_bytes

    names = read_bytes(path, "labels file").decode("utf-8", "replace").splitlines()
    while names and not names[-1].strip():
        names.pop()
    return names


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


def _dataset_test_image(spec, validation_split):
    """An image file of a folder: dataset (its first held-out image), or None for the built-in sample."""
    from tinyvision.errors import TinyVisionError

    if spec is None or spec.startswith("builtin"):
        return None
    kind, _, path = spec.partition(":")
    if kind != "folder" or not path:
        raise TinyVisionError(f"--dataset={spec}: a test image can be taken from a folder: or built-in dataset; "
                              "give --test_image=FILE instead")
    from tinyvision.data.loaders import folder_files

    subset = "validation" if validation_split else None
    files, _, _ = folder_files(path, validation_split or None, subset)
    return files[0]
