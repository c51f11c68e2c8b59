"""Build a zoo model and save it as .keras; prints its params, MACs and int8 flash size.

  tinyvision build --model=seed003_vww --resolution=96 --output=out/model.keras
  tinyvision build --model=fomo_mobilenet_v2_0.35_160 --task=detection --output=out/detector.keras
  tinyvision build --list
"""
from absl import flags

flags.DEFINE_string("model", None, "(required) zoo model name (see --list)")
flags.DEFINE_string("output", None, "(required) where to save the .keras model")
flags.DEFINE_integer("resolution", None, "input resolution (default: the zoo entry's, shown by --list)")
flags.DEFINE_float("alpha", None, "width multiplier of MobileNetV2 models (default: the zoo entry's, e.g. 0.35 for "
                   "mobilenet_v2_0.35_96)")
flags.DEFINE_integer("classes", None, "number of classes (default: the zoo entry's, shown by --list); for a "
                     "detection model the object classes, background not counted")
flags.DEFINE_enum("task", None, ["classification", "detection"], "the task the model must be built for (default: "
                  "the zoo entry's, shown by --list); a model of another task is refused")
flags.DEFINE_bool("list", False, "print the zoo with input, classes, params, MACs and flash, and exit")
FLAGS = flags.FLAGS


def needs_tensorflow():
    return not FLAGS.list


def run():
    from tinyvision.errors import TinyVisionError

    if FLAGS.list:
        print_zoo()
        return
    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required (or --list)")
    import models
    from converters.cli.common import save_keras

    if FLAGS.model in models.TASKS and FLAGS.task and models.TASKS[FLAGS.model] != FLAGS.task:
        raise TinyVisionError(f"{FLAGS.model} is a {models.TASKS[FLAGS.model]} model, not a {FLAGS.task} one; "
                              f"the {FLAGS.task} models: " +
                              ", ".join(n for n, t in models.TASKS.items() if t == FLAGS.task))
    overrides = {k: getattr(FLAGS, k) for k in ("resolution", "alpha", "classes") if getattr(FLAGS, k) is not None}
    model = models.build(FLAGS.model, **overrides)
    d = models.describe(model)
    print(f"{FLAGS.model}: input {model.input_shape[1:]}, {d['params']:,} params, {d['macs']:,} MACs, "
          f"{d['flash_bytes']:,} B int8 weights")
    save_keras(model, FLAGS.output)
    print(f"wrote {FLAGS.output}")


def print_zoo():
    """The zoo table from models/zoo_figures.json (read as a file: importing ``models`` loads TensorFlow)."""
    import importlib.util
    import json
    import os

    folder = importlib.util.find_spec("models").submodule_search_locations[0]
    with open(os.path.join(folder, "zoo_figures.json"), encoding="utf-8") as f:
        figures = json.load(f)
    print(f"{'model':<28}{'task':<16}{'input':>11}{'classes':>9}{'params':>12}{'MACs':>14}{'flash B':>12}")
    for name, d in figures.items():
        print(f"{name:<28}{d['task']:<16}{'x'.join(map(str, d['input'])):>11}{d['classes']:>9}{d['params']:>12,}"
              f"{d['macs']:>14,}"
              f"{d['flash_bytes']:>12,}")
