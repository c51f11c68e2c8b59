"""Train a .keras model on the built-in dataset or data on disk: float epochs, then QAT.

Runs under a tf.distribute strategy on tf.data input, so several GPUs or workers use
TensorFlow's own distribution (multi-worker reads TF_CONFIG).

  tinyvision train --model=out/model.keras --dataset=builtin_vww --epochs=3 --output=out/model_qat.h5
"""
from absl import flags

from converters.cli.common import DATASET_HELP, VALIDATION_SPLIT_HELP

flags.DEFINE_string("model", None, "(required) .keras model to train")
flags.DEFINE_string("output", None, "(required) where to save the trained model (.h5 for QAT models, which tfmot cannot reload from .keras)")
flags.DEFINE_string("dataset", "builtin", DATASET_HELP)
flags.DEFINE_string("val_dataset", None, "validation data (default: the built-in data's val split, a folder's "
                    "validation subset, or none for tfrecord:)")
flags.DEFINE_float("validation_split", 0.2, VALIDATION_SPLIT_HELP)
flags.DEFINE_integer("epochs", 3, "float training epochs")
flags.DEFINE_integer("qat_epochs", 1, "quantization-aware fine-tuning epochs")
flags.DEFINE_bool("qat", True, "fine-tune with quantization-aware training")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi-worker"], "tf.distribute strategy")
flags.DEFINE_integer("samples", 2000, "built-in dataset: training samples")
flags.DEFINE_integer("batch_size", 32, "global batch size")
flags.DEFINE_float("learning_rate", 2e-3, "float training learning rate")
flags.DEFINE_integer("seed", 0, "data and initialization seed")
FLAGS = flags.FLAGS


def run():
    from converters.cli.common import dataset, has_validation_data, image_resolution, load_keras, save_keras
    from tinyvision.errors import TinyVisionError
    from tinyvision.training import train

    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required")
    model = load_keras(FLAGS.model)
    resolution = image_resolution(model)
    split = FLAGS.validation_split if FLAGS.val_dataset is None else 0.0
    train_ds, _ = dataset(FLAGS.dataset, resolution, "train", FLAGS.samples, FLAGS.seed, FLAGS.batch_size,
                          shuffle=True, validation_split=split)
    val_spec = FLAGS.val_dataset or (FLAGS.dataset if has_validation_data(FLAGS.dataset, split) else None)
    val_ds = None
    if val_spec:
        val_ds, _ = dataset(val_spec, resolution, "val", max(FLAGS.samples // 4, 64), FLAGS.seed, FLAGS.batch_size,
                            validation_split=split)
    else:
        print("no validation data: no accuracy is reported (give --val_dataset, or a folder: dataset "
              "with --validation_split)")
    result = train(model, train_ds, val_ds, epochs=FLAGS.epochs, qat=FLAGS.qat, qat_epochs=FLAGS.qat_epochs,
                   strategy=FLAGS.strategy, learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
                   seed=FLAGS.seed)
    for key, value in result.metrics.items():
        if value is not None:
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    save_keras(result.model, FLAGS.output)
    print(f"wrote {FLAGS.output}")
