"""Run a patch bundle (docs/bundle-format.md) on real TFLM interpreters, the way the device does.

For every image: for each patch in plan order, copy its window of its source (the
image, or an earlier stage's buffer) into the patch model's input, invoke, copy the
output into its box of its stage's buffer (NHWC int8, ``channels`` values at channel
offset ``c``); then invoke the tail on the last stage buffer. The whole job (all interpreters, all images) runs in
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
    from tinyvision.bundle import Bundle, read_bundle

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

    outputs: (N, *tail output without batch); stages: per stage, the (N, Hs, Ws, Cs) assembled buffers (a stage
    filled more than once: its last fill).
    """

    outputs: np.ndarray
    stages: list


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

    def run_source(self, inputs, timeout=None):
        """The source model's outputs for a batch of its own inputs ``(N, *input shape[1:])``: a float or
        NCHW input becomes the bundle's image, and the tail's int8 output the source's output, the way
        the source's QUANTIZE / TRANSPOSE / DEQUANTIZE would (``converters.patching.edges``)."""
        from converters.patching.edges import SourceEdges

        edges = SourceEdges.from_plan(self.bundle.plan())
        return edges.outputs(self.run(edges.images(inputs), timeout=timeout))

    def run_detailed(self, images, timeout=None):
        """A ``BundleRun`` of int8 images."""
        x = _as_images(images, self.bundle.image["shape"])
        return isolated.call(
            f"{_HERE}:run_bundle_job", [m.data for m in self.bundle.models], self.bundle.plan(), x,
            timeout=timeout, who="TFLM", task=f"running a {len(self.bundle.patches)}-patch bundle",
        )


@dataclasses.dataclass(frozen=True)
class Verification:
    """A bundle on TFLM checked against its source model running on TFLM (the reference: the target
    runs TFLM, and tf.lite.Interpreter refuses or disagrees with some models TFLM runs); truthy when
    the split is exact.

    ok: the assembled stage buffers equal the source's stage tensors and the outputs the source's
    outputs (for the source's own inputs: float or NCHW inputs go through the bundle's edges).
    Counts are values over all inputs.
    """

    ok: bool
    detail: str
    n_inputs: int
    stage_mismatches: int
    output_mismatches: int
    max_abs_diff: float

    def __bool__(self):
        return self.ok


def verify_bundle(bundle, original_model_bytes, n_inputs=4, seed=0, timeout=None):
    """Run ``n_inputs`` random inputs of the source model (``random_source_inputs``) through the bundle
    and through the source on TFLM, in one subprocess; returns a ``Verification``.

    The source's stage tensors come from a copy of it that also outputs them (``with_outputs``);
    the job checks that the copy's outputs equal the source's.
    """
    from converters.ir import Model
    from converters.patching.edges import random_source_inputs

    bundle = _as_bundle(bundle)
    original = Model.from_bytes(bytes(original_model_bytes), bundle.source.get("file", "source model"))
    inputs = random_source_inputs(original, n_inputs, seed)
    reference = with_outputs(original, [s["tensor"] for s in bundle.stages])
    return isolated.call(
        f"{_HERE}:verify_job", [m.data for m in bundle.models], bundle.plan(), bytes(original_model_bytes),
        reference, inputs, tflm_defect(original), timeout=timeout, who="TFLM",
        task="verifying a patch bundle against its source model",
    )


def tflm_defect(model):
    """Why TFLM's result on ``model`` is not well defined (None when it is): TFLM's SPACE_TO_BATCH_ND (a
    dilated convolution's padding) never sets its pad value (``output_offset``: persistent op data
    left as the arena held it), so it may pad with anything but the zero point. A bundle runs that
    convolution dilated and pads with the zero point, which is what tf.lite.Interpreter computes."""
    if any(op.opcode == "SPACE_TO_BATCH_ND" for op in model.main.ops):
        return "TFLM's SPACE_TO_BATCH_ND pads with an unset value (it never sets output_offset)"
    return None


def with_outputs(model, tensor_names):
    """.tflite bytes of ``model`` (a ``converters.ir.Model``, not changed) that also outputs the named tensors
    after its own outputs. Its offline plan is dropped: it would let TFLM reuse their memory."""
    from converters.planning import METADATA_NAME

    copy = model.copy()
    graph = copy.main
    by_name = {}
    for t in graph.used_tensors():
        by_name.setdefault(t.name, []).append(t)
    for name in tensor_names:
        found = by_name.get(name, [])
        if len(found) != 1:
            raise TinyVisionError(f"the source model has {len(found)} tensors named {name!r}, expected one")
        graph.outputs.append(found[0])
    copy.metadata.pop(METADATA_NAME, None)
    return copy.to_bytes()


def compare_runs(outputs, stages, reference_outputs, reference_stages, reference="the source model on TFLM"):
    """A ``Verification`` of a bundle's outputs and stage buffers against ``reference``'s."""
    stage_bad = sum(_differences(got, want.reshape(got.shape))[0] for got, want in zip(stages, reference_stages))
    got, want = output_list(outputs), output_list(reference_outputs)
    if len(got) != len(want):
        raise TinyVisionError(f"the bundle gives {len(got)} outputs, {reference} {len(want)}")
    per_output = [_differences(a, b) for a, b in zip(got, want)]
    bad, max_diff = sum(b for b, _ in per_output), max(d for _, d in per_output)
    n = len(got[0])
    if stage_bad == 0 and bad == 0:
        detail = f"bit-exact with {reference} on {n} random inputs (stage buffers and outputs)"
    else:
        detail = (f"NOT exact on {n} random inputs: {stage_bad} stage-buffer values and {bad} output values "
                  f"differ from {reference} (max |diff| {max_diff:g})")
    return Verification(stage_bad == 0 and bad == 0, detail, n, stage_bad, bad, max_diff)


# ---------------------------------------------------------------- jobs (run in the child)


def _arena_size(entry):
    """A host arena for one model: TFLM's measured need with room for its planner's scratch, or a default."""
    head, tail = entry.get("nonpersistent_bytes"), entry.get("persistent_bytes")
    if head is None or tail is None:
        return None
    return 2 * (head + tail) + (64 << 10)


def _input_shape(interpreter):
    return tuple(int(d) for d in interpreter.get_input_details(0)["shape"])


def run_bundle_job(model_data, plan, images):
    """``BundleRun`` of the bundle on TFLM interpreters."""
    from tinyvision.bundle.schedule import IMAGE
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
            reads = p.get("source", p["stage"] - 1)
            source = image if reads == IMAGE else buffers[reads]
            window = source[w["y"]:w["y"] + w["h"], w["x"]:w["x"] + w["w"], :]
            (out,) = tflm.invoke(interpreters[k], [np.ascontiguousarray(window).reshape(shapes[k])], files[k])
            buffers[p["stage"]][o["y"]:o["y"] + o["h"], o["x"]:o["x"] + o["w"], o["c"]:o["c"] + o["channels"]] = (
                out.reshape(o["h"], o["w"], o["channels"]))
        tail_input = buffers[-1] if buffers else image  # a whole_model bundle's tail reads the image
        outputs.append([y[0] for y in tflm.invoke(interpreters[tail], [tail_input.reshape(shapes[tail])],
                                                   files[tail])])
        for values, buffer in zip(stages, buffers):
            values.append(buffer)
    return BundleRun(stacked_outputs(outputs), [np.stack(values) for values in stages])


def stacked_outputs(per_input):
    """Per input, the list of a model's outputs -> (N, ...) for one output, or a list of them, one per output."""
    stacked = [np.stack(values) for values in zip(*per_input)]
    return stacked[0] if len(stacked) == 1 else stacked


def output_list(outputs):
    """``stacked_outputs``' result as a list with one entry per output."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def reference_job(original, reference, inputs, stage_count):
    """The source's outputs and stage tensors on TFLM, from ``reference`` (the source with its stage
    tensors as extra outputs), after checking that its outputs are the source's own."""
    from tinyvision.runtime import tflm

    source, copy = tflm.open_interpreter(original, None, "the source model"), tflm.open_interpreter(
        reference, None, "the source model with its stage tensors as outputs")
    outputs, stages = [], [[] for _ in range(stage_count)]
    for x in inputs:
        want = tflm.invoke(source, [x[None]], "the source model")
        got = tflm.invoke(copy, [x[None]], "the source model with its stage tensors as outputs")
        if not all(np.array_equal(a, b) for a, b in zip(got, want)):
            raise TinyVisionError("internal error: outputting the stage tensors changed the source model's outputs")
        outputs.append([y[0] for y in want])
        for values, tensor in zip(stages, got[len(want):]):
            values.append(tensor[0] if tensor.shape[:1] == (1,) else tensor)
    return stacked_outputs(outputs), [np.stack(values) for values in stages]


def _differences(got, want):
    """(values that differ, max |diff|); a shape mismatch counts every value."""
    if got.shape != want.shape:
        return max(got.size, want.size), -1
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return int(np.count_nonzero(diff)), float(diff.max()) if diff.size else 0.0


def verify_job(model_data, plan, original, reference, inputs, defect):
    """``compare_runs`` against TFLM running the source; where TFLM's result is not well defined
    (``tflm_defect``: it changes with what the arena held), against tf.lite.Interpreter, saying why."""
    from converters.patching.edges import SourceEdges
    from tinyvision.runtime import tflm

    edges = SourceEdges.from_plan(plan)
    run = run_bundle_job(model_data, plan, edges.images(inputs))
    if defect is None:
        outputs, stages = reference_job(original, reference, inputs, len(plan["stages"]))
        return compare_runs(edges.outputs(run.outputs), run.stages, outputs, stages)
    runs = tflm.reference_runs(reference, [[x[None]] for x in inputs], "the source model")
    count = len(runs[0]) - len(plan["stages"])
    stages = [np.stack([r[count + k][0] for r in runs]) for k in range(len(plan["stages"]))]
    outputs = stacked_outputs([[y[0] for y in r[:count]] for r in runs])
    return compare_runs(edges.outputs(run.outputs), run.stages, outputs, stages,
                        f"the source model on tf.lite.Interpreter ({defect})")
