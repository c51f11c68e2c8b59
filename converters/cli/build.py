"""Build a zoo model and save it as .keras; prints its params, MACs and int8 flash size.

  tinyvision build --model=seed003_vww --resolution=96 --output=out/model.keras
  tinyvision build --list
"""
from absl import flags

flags.DEFINE_string("model", None, "zoo model name (see --list)")
flags.DEFINE_string("output", None, "where to save the .keras model")
flags.DEFINE_integer("resolution", None, "input resolution override")
flags.DEFINE_float("alpha", None, "width multiplier override (MobileNetV2 models)")
flags.DEFINE_integer("classes", None, "number of classes override")
flags.DEFINE_bool("list", False, "print the zoo with params, MACs and flash, and exit")
FLAGS = flags.FLAGS


def run():
    import models
    from converters.cli.common import save_keras
    from tinyvision.errors import TinyVisionError

    if FLAGS.list:
        print(f"{'model':<28}{'params':>12}{'MACs':>16}{'flash B':>12}")
        for name in models.ZOO:
            d = models.describe(models.build(name))
            print(f"{name:<28}{d['params']:>12,}{d['macs']:>16,}{d['flash_bytes']:>12,}")
        return
    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required (or --list)")
    overrides = {k: getattr(FLAGS, k) for k in ("resolution", "alpha", "classes") if getattr(FLAGS, k) is not None}
    model = models.build(FLAGS.model, **overrides)
    d = models.describe(model)
    print(f"{FLAGS.model}: input {model.input_shape[1:]}, {d['params']:,} params, {d['macs']:,} MACs, "
          f"{d['flash_bytes']:,} B int8 weights")
    save_keras(model, FLAGS.output)
    print(f"wrote {FLAGS.output}")
