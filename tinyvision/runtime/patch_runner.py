"""Run a patch bundle (docs/bundle-format.md) on real TFLM interpreters, the way the device does.

For every image: for each patch in plan order (stage by stage), copy its window of
its source (the image for stage 0, else the previous stage's buffer) into the patch
model's input, invoke, copy the output into its box of its stage's buffer (NHWC int8,
``channels`` values at channel offset ``c``); then invoke the tail on the last stage
buffer. The whole job (all interpreters, all images) runs in
ONE subprocess (``tinyvision.runtime.isolated``): TFLM may abort on a bad model.

On the host every model gets its own interpreter and arena; the device shares
one arena between them (``plan["arena"]``), which changes where tensors live but
not a single value.
"""
import dataclasses

import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.runtime import isolated

_HERE = "tinyvision.runtime.patch_runner"


def _as_bundle(bundle):
    from converters.patching.bundle import Bundle, read_bundle

    return bundle if isinstance(bundle, Bundle) else read_bundle(bundle)


def _as_images(images, shape):
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.int8 or tuple(x.shape[1:]) != tuple(shape):
        raise TinyVisionError(f"images must be int8 {tuple(shape)} (or a batch of them), got "
                              f"{x.dtype.name} {tuple(x.shape)}")
    return np.ascontiguousarray(x)


@dataclasses.dataclass
class BundleRun:
    """Results of a bundle on TFLM for N images.

    outputs: (N, *tail output without batch); stages: per stage, the (N, Hs, Ws, Cs) assembled buffers;
    unsplit: the unsplit model's outputs on TFLM (same shape as outputs), when it was run.
    """

    outputs: np.ndarray
    stages: list
    unsplit: np.ndarray = None


class PatchRunner:
    """Executes a bundle (a ``Bundle`` or a bundle folder) on TFLM."""

    def __init__(self, bundle):
        self.bundle = _as_bundle(bundle)

    def run(self, images, return_stage=False, timeout=None):
        """Outputs for int8 images ``(H, W, C)`` or ``(N, H, W, C)``: an array ``(N, *tail output shape)``.

        return_stage: return ``(outputs, [per stage: buffers (N, Hs, Ws, Cs)])`` instead.
        """
        result = self.run_detailed(images, timeout=timeout)
        return (result.outputs, result.stages) if return_stage else result.outputs

    def run_detailed(self, images, original_model_bytes=None, timeout=None):
        """A ``BundleRun``; with ``original_model_bytes`` the unsplit model also runs on TFLM (same subprocess)."""
        x = _as_images(images, self.bundle.image["shape"])
        original = None if original_model_bytes is None else bytes(original_model_bytes)
        return isolated.call(
            f"{_HERE}:run_bundle_job", [m.data for m in self.bundle.models], self.bundle.plan(), x, original,
            timeout=timeout, who="TFLM", task=f"running a {len(self.bundle.patches)}-patch bundle",
        )


@dataclasses.dataclass(frozen=True)
class Verification:
    """A bundle on TFLM checked against its source model; truthy when the split is exact.

    ok: the assembled stage buffers equal the source's stage tensors on tf.lite.Interpreter
        (reference kernels): every patch is exact, and the tail is the source's own ops on them;
    matches_reference: the outputs equal tf.lite.Interpreter's too. They can differ only where
        TFLM's kernels differ from TFLite's in the tail (e.g. FULLY_CONNECTED rounding), which
        the unsplit model on TFLM shows as well (``unsplit_mismatches`` compares with it; it also
        differs where TFLM's own kernels differ inside the stage, e.g. SPACE_TO_BATCH_ND padding).
    Counts are values over all images.
    """

    ok: bool
    matches_reference: bool
    detail: str
    n_inputs: int
    stage_mismatches: int
    output_mismatches: int  # vs tf.lite.Interpreter
    unsplit_mismatches: int  # vs the unsplit model on TFLM
    max_abs_diff: int  # vs tf.lite.Interpreter

    def __bool__(self):
        return self.ok


def verify_bundle(bundle, original_model_bytes, n_inputs=4, seed=0, timeout=None):
    """Run ``n_inputs`` uniform random int8 images through the bundle (TFLM) and the original model.

    References: the original on tf.lite.Interpreter with the reference kernels (the ones TFLM
    ports; its stage tensor and outputs) and the original on TFLM (outputs). One subprocess
    for everything (it imports TensorFlow: a few seconds). Returns a ``Verification``.
    """
    bundle = _as_bundle(bundle)
    rng = np.random.default_rng(seed)
    shape = tuple(bundle.image["shape"])
    images = rng.integers(-128, 128, size=(n_inputs, *shape), dtype=np.int8)
    return isolated.call(
        f"{_HERE}:verify_job", [m.data for m in bundle.models], bundle.plan(), bytes(original_model_bytes), images,
        timeout=timeout, who="TFLM", task="verifying a patch bundle against its source model",
    )


def compare_runs(run, reference_outputs, reference_stages):
    """A ``Verification`` from a ``BundleRun`` (with ``unsplit``) and tf.lite.Interpreter's outputs and stages."""
    stage_bad = sum(_differences(got, want)[0] for got, want in zip(run.stages, reference_stages))
    bad, max_diff = _differences(run.outputs, reference_outputs)
    unsplit_bad, _ = _differences(run.outputs, run.unsplit)
    whole_bad, _ = _differences(run.unsplit, reference_outputs)
    n = len(run.outputs)
    unsplit = (f"the unsplit model on TFLM matches it" if whole_bad == 0
               else f"the unsplit model on TFLM differs from it in {whole_bad} values")
    if stage_bad == 0 and bad == 0:
        detail = f"bit-exact on {n} random inputs (stage buffer and outputs; {unsplit})"
    elif stage_bad == 0:
        detail = (f"exact split on {n} random inputs: stage buffer bit-exact, but TFLM's tail kernels give {bad} "
                  f"output values that differ from tf.lite.Interpreter (max |diff| {max_diff}); {unsplit}, "
                  f"the bundle in {unsplit_bad}")
    else:
        detail = (f"NOT exact on {n} random inputs: {stage_bad} stage-buffer values and {bad} output values differ "
                  f"from tf.lite.Interpreter; {unsplit}")
    return Verification(stage_bad == 0, bad == 0, detail, n, stage_bad, bad, unsplit_bad, max_diff)


def reference_run(original_model_bytes, images, stage_tensor_names):
    """(outputs, [per stage: tensors (N, ...)]) of the source model on tf.lite.Interpreter (BUILTIN_REF),
    in this process.

    Imports TensorFlow. images: (N, H, W, C) int8; stage_tensor_names: the source tensors the bundle's
    stage buffers hold (``plan["stages"][k]["tensor"]``).
    """
    import tinyvision  # noqa: F401  (Keras environment before TensorFlow)
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_content=bytes(original_model_bytes),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    indices = []
    for name in stage_tensor_names:
        found = [d["index"] for d in interpreter.get_tensor_details() if d["name"] == name]
        if len(found) != 1:
            raise TinyVisionError(f"the source model has {len(found)} tensors named {name!r}, expected one")
        indices += found
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs, stages = [], [[] for _ in indices]
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(out["index"])[0]))
        for values, index in zip(stages, indices):
            values.append(np.array(interpreter.get_tensor(index)))
    return np.stack(outputs), [np.stack(values) for values in stages]


def measure_models(model_data, timeout=None):
    """TFLM's ``ArenaReport`` (head = non-persistent, tail = persistent bytes) of each model, in one subprocess."""
    return isolated.call(f"{_HERE}:measure_models_job", [bytes(d) for d in model_data], timeout=timeout,
                         who="TFLM", task=f"measuring {len(model_data)} models")


# ---------------------------------------------------------------- jobs (run in the child)


def _arena_size(entry):
    """A host arena for one model: TFLM's measured need with room for its planner's scratch, or a default."""
    head, tail = entry.get("nonpersistent_bytes"), entry.get("persistent_bytes")
    if head is None or tail is None:
        return None
    return 2 * (head + tail) + (64 << 10)


def _input_shape(interpreter):
    return tuple(int(d) for d in interpreter.get_input_details(0)["shape"])


def run_bundle_job(model_data, plan, images, original=None):
    """``BundleRun`` of the bundle (and the unsplit ``original``) on TFLM interpreters."""
    from tinyvision.runtime import tflm

    files = [m["file"] for m in plan["models"]]
    interpreters = [tflm.open_interpreter(data, _arena_size(entry), entry["file"])
                    for data, entry in zip(model_data, plan["models"])]
    shapes = [_input_shape(it) for it in interpreters]
    tail = plan["tail"]["model"]
    outputs, stages = [], [[] for _ in plan["stages"]]
    for image in images:
        buffers = [np.zeros(s["shape"], dtype=np.int8) for s in plan["stages"]]
        for p in plan["patches"]:
            w, o, k = p["window"], p["output"], p["model"]
            source = image if p["stage"] == 0 else buffers[p["stage"] - 1]
            window = source[w["y"]:w["y"] + w["h"], w["x"]:w["x"] + w["w"], :]
            (out,) = tflm.invoke(interpreters[k], [np.ascontiguousarray(window).reshape(shapes[k])], files[k])
            buffers[p["stage"]][o["y"]:o["y"] + o["h"], o["x"]:o["x"] + o["w"], o["c"]:o["c"] + o["channels"]] = (
                out.reshape(o["h"], o["w"], o["channels"]))
        tail_input = buffers[-1] if buffers else image  # a whole_model bundle's tail reads the image
        (result,) = tflm.invoke(interpreters[tail], [tail_input.reshape(shapes[tail])], files[tail])
        outputs.append(result[0])
        for values, buffer in zip(stages, buffers):
            values.append(buffer)
    unsplit = None
    if original is not None:
        name = plan["source"]["file"]
        whole = tflm.open_interpreter(original, None, name)
        unsplit = np.stack([tflm.invoke(whole, [image[None]], name)[0][0] for image in images])
    return BundleRun(np.stack(outputs), [np.stack(values) for values in stages], unsplit)


def measure_models_job(model_data):
    from tinyvision.runtime import tflm

    return [tflm.measure_job(data, None, f"model {i}") for i, data in enumerate(model_data)]


def _differences(got, want):
    """(values that differ, max |diff|); a shape mismatch counts every value."""
    if got.shape != want.shape:
        return max(got.size, want.size), -1
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    return int(np.count_nonzero(diff)), int(diff.max()) if diff.size else 0


def verify_job(model_data, plan, original, images):
    run = run_bundle_job(model_data, plan, images, original)
    outputs, stages = reference_run(original, images, [s["tensor"] for s in plan["stages"]])
    return compare_runs(run, outputs, [want.reshape(got.shape) for got, want in zip(run.stages, stages)])
