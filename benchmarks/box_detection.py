"""Box detection benchmark: the zoo's YOLO-style MobileNetV2-0.35 box detector (160 px by default), trained on the
built-in detection scenes, as float (QAT Keras), int8 .tflite on TFLM and patch bundle, with mAP and TFLM arenas.

    python benchmarks/box_detection.py [--resolution=160] [--samples=3000] [--epochs=40] [--noaugment] [--work_dir=DIR]
                                       [--json]

Steps: ``models.build("yolo_mobilenet_v2_0.35_224", resolution=...)`` (k-means anchors of the scenes), ``tinyvision.training.train``
on ``BoxCoding.targets`` (float epochs, then one QAT epoch; ``BoxLoss``), ``converters.quantize.to_int8_tflite``,
then the real CLI ``convert --patches=auto`` (bit-exact on TFLM, or it fails). Each form's outputs on the val
scenes decode with ``BoxCoding.decode`` (the device decoder's rules) and score VOC mAP@0.5 and COCO
mAP@[.5:.95]. The unsplit arena is TFLM's own measurement (``tinyvision.runtime.tflm.measure``); the
bundle's comes from its plan.json, which convert measured on TFLM.
"""
import os
import time

from absl import app, flags

from cli_runs import arena_table, cli, define_flags, run_and_print, split_figures

MODEL = "yolo_mobilenet_v2_0.35_224"
define_flags(3000, 40, "128KiB", 0.3)
flags.DEFINE_integer("resolution", 160, "input side in pixels (a multiple of the head's stride, 16)")
flags.DEFINE_float("threshold", 0.05, "score threshold of the decoder (low: mAP ranks the detections)")
flags.DEFINE_float("extra_iou", 0.3, "a box also trains every anchor of its cell whose shape it overlaps by more")
flags.DEFINE_bool("augment", True, "flip and crop each training scene at random every epoch, as `tinyvision train` "
                  "does by default (--noaugment: the fixed scenes)")
FLAGS = flags.FLAGS


def train_and_convert(work):
    """(QAT Keras model, BoxCoding, int8 .tflite path, training seconds)."""
    import models
    from converters.quantize import to_int8_tflite
    from tinyvision.data.detection import detection_arrays
    from tinyvision.detection import BoxCoding
    from tinyvision.detection.box_coding import box_targets
    from tinyvision.training import train

    built = models.build(MODEL, resolution=FLAGS.resolution)
    coding = BoxCoding.of(built.get_layer("box_head"))
    resolution = built.input_shape[1]
    images, _, samples = detection_arrays(FLAGS.samples, resolution)
    grid = built.output_shape[1:3]
    if FLAGS.augment:  # the same scenes, flipped and cropped anew each epoch
        from converters.cli.box_data import augmented_training_data
        from tinyvision.data.detection_formats import annotated

        records = [annotated(s) for s in samples]
        data = augmented_training_data(records, coding, grid, resolution, extra_iou=FLAGS.extra_iou)
    else:
        data = (images, box_targets(samples, coding, grid, FLAGS.extra_iou))
    start = time.time()
    result = train(lambda: models.build(MODEL, resolution=resolution, anchors=coding.anchors), data,
                   epochs=FLAGS.epochs, qat_epochs=1, learning_rate=FLAGS.learning_rate, batch_size=32, seed=0, verbose=2)
    seconds = time.time() - start
    tflite = os.path.join(work, "box.tflite")
    with open(tflite, "wb") as f:
        f.write(to_int8_tflite(result.model, images, max_samples=200))
    return result.model, coding, tflite, seconds


def mean_average_precisions(outputs, coding, truth):
    """(VOC mAP@0.5, COCO mAP@[.5:.95], per-image detections) of Heatmaps ``outputs`` (float or int8) against
    ``truth``."""
    from tinyvision.detection import coco_map, voc_map

    found = [coding.decode(o, FLAGS.threshold, scale=outputs.scale, zero_point=outputs.zero_point)
             for o in outputs.values]
    return voc_map(found, truth).value, coco_map(found, truth).value, found


def run(work):
    from tinyvision.bundle import read_bundle
    from tinyvision.data.detection import detection_arrays
    from tinyvision.detection import GroundTruth
    from tinyvision.detection.runtime import bundle_heatmaps, keras_heatmaps, tflm_heatmaps
    from tinyvision.runtime import tflm

    model, coding, tflite, seconds = train_and_convert(work)
    bundle = os.path.join(work, "bundle")
    split = cli("convert", f"--model={tflite}", "--patches=auto", f"--budget={FLAGS.budget}",
                f"--max_mac_overhead={FLAGS.max_mac_overhead}", "--max_flash_overhead=3", f"--output={bundle}")
    images, _, samples = detection_arrays(FLAGS.eval_samples, model.input_shape[1], split="val")
    truth = [GroundTruth.of(s) for s in samples]
    with open(tflite, "rb") as f:
        data = f.read()
    forms = {"float": keras_heatmaps(model, images), "int8": tflm_heatmaps(data, images),
             "bundle": bundle_heatmaps(read_bundle(bundle), images)}
    scores = {form: mean_average_precisions(out, coding, truth) for form, out in forms.items()}
    unsplit = tflm.measure(data, name="box.tflite")
    b = read_bundle(bundle)
    return {
        "model": f"{MODEL} at {FLAGS.resolution} px", "anchors": [list(a) for a in coding.anchors],
        "train": {"samples": FLAGS.samples, "epochs": FLAGS.epochs, "qat_epochs": 1, "extra_iou": FLAGS.extra_iou,
                  "augment": FLAGS.augment, "seconds": round(seconds)},
        "eval": {"images": len(samples), "objects": int(sum(len(s.classes) for s in samples)),
                 "threshold": FLAGS.threshold},
        "map": {form: {"voc_map50": s[0], "coco_map": s[1]} for form, s in scores.items()},
        "bundle_outputs_equal_int8": bool((forms["bundle"].values == forms["int8"].values).all()),
        "bundle_detections_equal_int8": scores["bundle"][2] == scores["int8"][2],
        **split_figures(split, unsplit, b, len(data)),
    }


def report(r):
    u, bn = r["unsplit_arena"], r["bundle_arena"]
    lines = [f"{r['model']}: trained on {r['train']['samples']} images, {r['train']['epochs']} float + 1 QAT epochs "
             f"in {r['train']['seconds']} s{', flipped and cropped each epoch' if r['train']['augment'] else ''} "
             f"(extra anchors over IoU {r['train']['extra_iou']}); anchors "
             f"{[[round(v, 1) for v in a] for a in r['anchors']]} px",
             f"{r['eval']['images']} val images, {r['eval']['objects']} objects, score threshold "
             f"{r['eval']['threshold']}", "", f"{'form':<8}{'mAP@0.5':>10}{'mAP@.5:.95':>12}"]
    lines += [f"{form:<8}{m['voc_map50']:>10.4f}{m['coco_map']:>12.4f}" for form, m in r["map"].items()]
    lines += ["", f"bundle outputs equal int8: {r['bundle_outputs_equal_int8']}; detections equal: "
                  f"{r['bundle_detections_equal_int8']}; convert's TFLM check bit-exact: {r['bundle_bit_exact']}",
              r["split"], "", *arena_table(u, bn),
              f"MAC overhead {100 * (r['mac_overhead'] or 0):.1f} %; model flash {r['flash']['unsplit']:,} B unsplit, "
              f"{r['flash']['bundle']:,} B bundle (separate files)"]
    return lines


if __name__ == "__main__":
    app.run(lambda argv: run_and_print(run, report, "tinyvision-box-detection-"))
