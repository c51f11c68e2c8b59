"""Run models on the real TensorFlow Lite Micro (the ``tflite-micro`` pip package) and measure its arena.

Every public function here runs TFLM in a fresh subprocess (``tinyvision.runtime.isolated``),
because TFLM aborts or segfaults the whole process on some models; a failure
comes back as one ``TinyVisionError`` line. The ``*_job`` functions are what
the child runs; ``open_interpreter`` / ``invoke`` / ``arena_report`` are the in-process building
blocks for a caller's own multi-interpreter job, to be run inside ONE
``isolated.call("your.module:your_job", ...)``.

Arena figures come from TFLM's ``RecordingMicroAllocator`` (``print_allocations``):
head = the non-persistent section (the planned activation buffers, reused
between operators), tail = persistent data (tensor structs, kernel op-data,
quantization multipliers), total = head + tail = the bytes TFLM used.
``min_arena_bytes`` is the smallest ``arena_size`` that allocates and invokes,
found by search: it can exceed ``total`` because planning needs temporary room.
It assumes a 16-byte-aligned arena (as malloc gives on the host): firmware
should declare ``alignas(16) uint8_t arena[N]`` or add 15 bytes.
"""
import dataclasses
import os
import re

import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.fileio import check_tflite_bytes
from tinyvision.runtime import isolated
from tinyvision.runtime.isolated import captured_c_output

_HERE = "tinyvision.runtime.tflm"
# An arena this large fits any model we can deploy many times over; TFLM only
# touches what it uses, so asking for it is cheap on the host.
_GENEROUS_ARENA = 16 << 20
_LARGEST_ARENA = 2 << 30
_ALIGN = 16
_ALLOCATION_RE = re.compile(r"Arena allocation (head|tail|total) (\d+) bytes")
_KIND_RE = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested \d+ bytes for (\d+) ")


@dataclasses.dataclass(frozen=True)
class ArenaReport:
    """TFLM's own arena accounting after allocation and one invoke (bytes).

    persistent_kinds: (kind, bytes, allocations) of the tail as ``RecordingMicroAllocator`` names its
    parts: 'TfLiteEvalTensor data', 'Persistent buffer data' (the kernels' op data: per-channel
    multipliers and shifts), 'NodeAndRegistration struct', ...
    """

    head_bytes: int
    tail_bytes: int
    total_bytes: int
    persistent_kinds: tuple = ()


@dataclasses.dataclass(frozen=True)
class Comparison:
    """TFLM outputs vs tf.lite.Interpreter (reference kernels) on the same input: a fact about the model
    (TFLM is the reference; tf.lite.Interpreter is stricter and its kernels round some ops differently).

    Truthy when bit-exact. ``max_abs_diff`` and ``mismatches`` are over all outputs; ``refused``: the
    tf.lite.Interpreter cannot load the model (``detail`` says why, in one line).
    """

    equal: bool
    max_abs_diff: float
    mismatches: int
    detail: str
    refused: bool = False

    def __bool__(self):
        return self.equal

    @property
    def verdict(self):
        """"agrees", "differs" or "refuses"."""
        return "refuses" if self.refused else "agrees" if self.equal else "differs"


class TfliteRefusal(TinyVisionError):
    """tf.lite.Interpreter cannot load a model (TFLM may still run it)."""


# ---------------------------------------------------------------- public API (parent side)


def measure(model_bytes, arena_size=None, name="model", timeout=None):
    """Allocate ``model_bytes`` on TFLM, invoke once on zeros, return its ``ArenaReport``.

    arena_size: bytes to give TFLM; None = a generous arena (the report is then what the model needs).
    """
    _check(model_bytes, name)
    return _call("measure_job", model_bytes, arena_size, name, timeout=timeout, task=f"allocating {name}")


def measure_many(models, arena_size=None, timeout=None):
    """``measure`` for several models in ONE subprocess: a list of ``ArenaReport`` in the same order.

    models: list of .tflite bytes (or (name, bytes) pairs, for error messages).
    """
    named = [m if isinstance(m, tuple) else (f"model {i}", m) for i, m in enumerate(models)]
    for name, data in named:
        _check(data, name)
    return _call("measure_many_job", named, arena_size, timeout=timeout, task=f"allocating {len(named)} models")


def allocation_tails(models, timeout=None):
    """TFLM's persistent tail (bytes) of each model once allocated (no invoke), in ONE subprocess.

    models: list of (name, .tflite bytes) pairs.
    """
    for name, data in models:
        _check(data, name)
    return _call("tails_job", list(models), timeout=timeout, task=f"allocating {len(models)} models")


def min_arena_bytes(model_bytes, name="model", timeout=None):
    """The smallest arena_size (bytes, 16-byte-aligned arena) for which TFLM allocates and invokes the model."""
    _check(model_bytes, name)
    return _call("min_arena_job", model_bytes, name, timeout=timeout, task=f"searching the arena size of {name}")


def run(model_bytes, inputs, arena_size=None, name="model", timeout=None):
    """One inference on TFLM: ``inputs`` (one array per model input, exact shape and dtype) -> list of outputs."""
    _check(model_bytes, name)
    return _call("run_job", model_bytes, _as_arrays(inputs), arena_size, name, timeout=timeout, task=f"running {name}")


def run_reference(model_bytes, inputs, name="model", timeout=None):
    """One inference on tf.lite.Interpreter with the BUILTIN_REF kernels (the ones TFLM ports)."""
    _check(model_bytes, name)
    return _call(
        "reference_job", model_bytes, _as_arrays(inputs), name, timeout=timeout, task=f"running {name} on TFLite",
        who="tf.lite.Interpreter",
    )


def compare(model_bytes, inputs=None, seed=0, samples=1, name="model", timeout=None):
    """Bit-exact check of TFLM against tf.lite.Interpreter (BUILTIN_REF).

    inputs: one array per model input (one inference); None = ``samples`` inferences on
    random inputs drawn with ``seed`` (uniform int8; a float input around its QUANTIZE's grid).
    Raises TinyVisionError unless the model is int8 apart from a float input QUANTIZE and output
    DEQUANTIZE (``require_int8`` of ``converters.patching.edges.int8_core``). The child imports
    TensorFlow for the reference (~5 s), after that check.
    Returns a ``Comparison`` (truthy when equal; ``refused`` when tf.lite.Interpreter cannot load it).
    """
    _check(model_bytes, name)
    arrays = None if inputs is None else _as_arrays(inputs)
    return _call("compare_job", model_bytes, arrays, seed, samples, name, timeout=timeout, task=f"comparing {name}")


def require_int8(model, name="model"):
    """Raise TinyVisionError unless every input/output is int8 and no activation is floating point.

    model: .tflite bytes (read with TFLM's bundled schema: no TensorFlow import) or a
    ``converters.ir.Model``.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        check_tflite_bytes(bytes(model[:8]), name)
        inputs, outputs, ops = _schema_view(bytes(model), name)
    else:
        graph = model.main

        def view(t):
            return t.name, np.dtype(t.dtype).name, t.is_constant

        inputs, outputs = [view(t) for t in graph.inputs], [view(t) for t in graph.outputs]
        ops = [(op.opcode, [view(t) for t in op.inputs + op.outputs if t is not None]) for op in graph.ops]
    for role, tensors in (("input", inputs), ("output", outputs)):
        for tensor_name, dtype, _ in tensors:
            if dtype != "int8":
                raise TinyVisionError(
                    f"{name} is not an int8 model: its {role} {tensor_name!r} is {dtype} "
                    f"(convert with inference_{role}_type=tf.int8)"
                )
    for index, (opcode, tensors) in enumerate(ops):
        for tensor_name, dtype, constant in tensors:
            if not constant and dtype.startswith(("float", "bfloat", "complex")):
                raise TinyVisionError(
                    f"{name} is not fully int8: {opcode} (op {index}) uses the {dtype} tensor {tensor_name!r}"
                )


def _schema_view(model_bytes, name):
    """(inputs, outputs, ops) of the main graph as (name, dtype name, is_constant) facts, via TFLM's schema."""
    from tflite_micro.python.tflite_micro import runtime

    schema = runtime.schema_fb
    try:
        model = runtime.convert_bytearray_to_object(bytearray(model_bytes))
        graph = model.subgraphs[0]
    except Exception as e:  # the generated parser fails in arbitrary ways on corrupt bytes
        raise TinyVisionError(f"{name} is not a valid TFLite model ({type(e).__name__}: {e})") from None
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    opcode_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def view(i):
        t = graph.tensors[i]
        buffer = model.buffers[t.buffer] if model.buffers and 0 < t.buffer < len(model.buffers) else None
        constant = buffer is not None and buffer.data is not None and len(buffer.data) > 0
        tensor_name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name)
        return tensor_name, type_names.get(t.type, str(t.type)), constant

    ops = []
    for op in graph.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        opcode = opcode_names.get(runtime.get_builtin_code_from_operator_code(code), "CUSTOM")
        ops.append((opcode, [view(i) for i in list(op.inputs) + list(op.outputs) if i >= 0]))
    return [view(i) for i in graph.inputs], [view(i) for i in graph.outputs], ops


# ---------------------------------------------------------------- in-process building blocks (child side)


def open_interpreter(model_bytes, arena_size=None, name="model"):
    """A TFLM Interpreter for ``model_bytes`` (call inside an isolated child: TFLM may abort).

    arena_size None = the smallest of 16 MiB, 32 MiB, ... that works. Raises TinyVisionError with
    TFLM's own message when the model cannot be loaded, and the size needed when the arena is too small.
    """
    _validate(model_bytes, name)
    if arena_size is None:
        interpreter, failure = _try_generous(model_bytes)
        if interpreter is None:
            raise TinyVisionError(f"TFLM cannot load {name}: {failure}")
        return interpreter
    interpreter, failure = _try_open(model_bytes, arena_size)
    if interpreter is not None:
        return interpreter
    works, reason = _try_generous(model_bytes)
    if works is None:
        raise TinyVisionError(f"TFLM cannot load {name}: {reason}")
    del works
    needed = _search_min_arena(model_bytes, name)
    raise TinyVisionError(
        f"tensor arena of {arena_size} bytes is too small for {name}: TFLM needs {needed} bytes "
        f"(TFLM said: {failure})"
    )


def invoke(interpreter, inputs, name="model"):
    """Set ``inputs`` (one array per model input), invoke, return the outputs as a list of arrays."""
    count = _io_count(interpreter, "input")
    if len(inputs) != count:
        raise TinyVisionError(f"{name} takes {count} input(s), got {len(inputs)}")
    for i, x in enumerate(inputs):
        detail = interpreter.get_input_details(i)
        shape, dtype = tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"])
        if tuple(x.shape) != shape or x.dtype != dtype:
            raise TinyVisionError(
                f"input {i} of {name} must be {dtype.name} {shape}, got {x.dtype.name} {tuple(x.shape)}"
            )
        interpreter.set_input(np.ascontiguousarray(x), i)
    with captured_c_output() as text:
        try:
            interpreter.invoke()
            error = None
        except RuntimeError as e:
            error = e
    if error is not None:
        raise TinyVisionError(f"TFLM failed to invoke {name}: {_tflm_message(text.text, error)}")
    return [np.array(interpreter.get_output(i)) for i in range(_io_count(interpreter, "output"))]


def zero_inputs(interpreter):
    """Zero arrays matching every input of a TFLM interpreter."""
    details = [interpreter.get_input_details(i) for i in range(_io_count(interpreter, "input"))]
    return [np.zeros(tuple(int(d) for d in detail["shape"]), detail["dtype"]) for detail in details]


def arena_report(interpreter):
    """Parse TFLM's ``print_allocations`` for an interpreter (after an invoke)."""
    with captured_c_output() as text:
        interpreter.print_allocations()
    found = dict((k, int(v)) for k, v in _ALLOCATION_RE.findall(text.text))
    if set(found) != {"head", "tail", "total"}:
        raise TinyVisionError(f"unexpected TFLM allocation report: {text.text.strip()[:200]!r}")
    kinds = tuple((kind, int(size), int(count)) for kind, size, count in _KIND_RE.findall(text.text))
    return ArenaReport(found["head"], found["tail"], found["total"], kinds)


# ---------------------------------------------------------------- jobs (what the child runs)


def measure_job(model_bytes, arena_size, name):
    interpreter = open_interpreter(model_bytes, arena_size, name)
    invoke(interpreter, zero_inputs(interpreter), name)
    return arena_report(interpreter)


def measure_many_job(named_models, arena_size):
    return [measure_job(data, arena_size, name) for name, data in named_models]


def tails_job(named_models):
    tails = []
    for name, data in named_models:
        interpreter = open_interpreter(data, None, name)
        tails.append(arena_report(interpreter).tail_bytes)
        del interpreter
    return tails


def min_arena_job(model_bytes, name):
    return _search_min_arena(model_bytes, name)


def run_job(model_bytes, inputs, arena_size, name):
    interpreter = open_interpreter(model_bytes, arena_size, name)
    return invoke(interpreter, inputs, name)


def reference_job(model_bytes, inputs, name):
    return reference_runs(model_bytes, [inputs], name)[0]


def reference_runs(model_bytes, batches, name):
    """tf.lite.Interpreter (BUILTIN_REF kernels) outputs for each input batch, with one interpreter."""
    import tensorflow as tf

    from tinyvision.native_log import lite_interpreter

    with captured_c_output():
        try:
            interpreter = lite_interpreter(
                model_content=bytes(model_bytes),
                experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
            )
            interpreter.allocate_tensors()
            error = None
        except (RuntimeError, ValueError) as e:
            error = e
    if error is not None:
        raise TfliteRefusal(f"tf.lite.Interpreter cannot load {name}: {_first_message(error)}")
    details = interpreter.get_input_details()
    results = []
    for inputs in batches:
        if len(inputs) != len(details):
            raise TinyVisionError(f"{name} takes {len(details)} input(s), got {len(inputs)}")
        for i, (x, d) in enumerate(zip(inputs, details)):
            shape, dtype = tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"])
            if tuple(x.shape) != shape or x.dtype != dtype:
                raise TinyVisionError(
                    f"input {i} of {name} must be {dtype.name} {shape}, got {x.dtype.name} {tuple(x.shape)}"
                )
            interpreter.set_tensor(d["index"], x)
        interpreter.invoke()
        results.append([np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()])
    return results


def compare_job(model_bytes, inputs, seed, samples, name):
    from converters.ir import Model
    from converters.patching.edges import int8_core, random_source_inputs

    model = Model.from_bytes(model_bytes, name)
    require_int8(int8_core(model)[0], name)
    interpreter = open_interpreter(model_bytes, None, name)
    if inputs is None and len(model.main.inputs) == 1:
        batches = [[x[None]] for x in random_source_inputs(model, samples, seed)]
    elif inputs is None:
        rng = np.random.default_rng(seed)
        shapes = [x.shape for x in zero_inputs(interpreter)]
        batches = [[rng.integers(-128, 128, size=s, dtype=np.int8) for s in shapes] for _ in range(samples)]
    else:
        batches = [inputs]
    max_diff, mismatches, notes = 0, 0, []
    try:
        references = reference_runs(model_bytes, batches, name)
    except TfliteRefusal as refusal:
        return Comparison(False, 0, 0, str(refusal), refused=True)
    for k, (batch, want) in enumerate(zip(batches, references)):
        got = invoke(interpreter, batch, name)
        if len(got) != len(want):
            notes.append(f"sample {k}: TFLM gave {len(got)} outputs, TFLite {len(want)}")
            mismatches += 1
        for i, (a, b) in enumerate(zip(got, want)):
            if a.shape != b.shape or a.dtype != b.dtype:
                notes.append(f"sample {k} output {i}: TFLM {a.dtype.name}{a.shape} vs TFLite {b.dtype.name}{b.shape}")
                mismatches += max(a.size, b.size)
                continue
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            wrong = int(np.count_nonzero(diff))
            if wrong:
                notes.append(f"sample {k} output {i}: {wrong}/{a.size} values differ (max |diff| {diff.max():g})")
                max_diff = max(max_diff, float(diff.max()))
            mismatches += wrong
    equal = mismatches == 0
    return Comparison(equal, max_diff, mismatches, "bit-exact" if equal else "; ".join(notes))


# ---------------------------------------------------------------- internals


def _call(job, *args, timeout=None, task, who="TFLM"):
    return isolated.call(f"{_HERE}:{job}", *args, timeout=timeout, task=task, who=who)


def _check(model_bytes, name):
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(f"model_bytes must be bytes, got {type(model_bytes).__name__}")
    check_tflite_bytes(bytes(model_bytes[:8]), name)


def _as_arrays(inputs):
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    return [np.asarray(x) for x in inputs]


def _io_count(interpreter, kind):
    """Number of model inputs or outputs of a TFLM interpreter (its Python API has no count: probe)."""
    details = interpreter.get_input_details if kind == "input" else interpreter.get_output_details
    count = 0
    with captured_c_output():  # TFLM prints the out-of-range probe
        while True:
            try:
                details(count)
            except IndexError:
                return count
            count += 1


def _validate(model_bytes, name):
    """Parse the flatbuffer the way TFLM's Python wrapper will, so corruption gives a clear error."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        model = runtime.convert_bytearray_to_object(bytearray(model_bytes))
    except Exception as e:  # the generated parser fails in arbitrary ways on corrupt bytes
        raise TinyVisionError(f"{name} is not a valid TFLite model ({type(e).__name__}: {e})") from None
    if not model.subgraphs or model.subgraphs[0].operators is None:
        raise TinyVisionError(f"{name} has no operators to run")


def _try_open(model_bytes, arena_size):
    """(interpreter, None) or (None, TFLM's message) for one arena size."""
    from tflite_micro.python.tflite_micro import runtime

    data = bytes(model_bytes)
    with captured_c_output() as text:
        try:
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(arena_size))
            error = None
        except (RuntimeError, ValueError) as e:
            interpreter, error = None, e
    if error is not None:
        return None, _tflm_message(text.text, error)
    return interpreter, None


def _try_generous(model_bytes):
    size, failure = max(_GENEROUS_ARENA, 4 * len(model_bytes)), None
    while size <= _LARGEST_ARENA:
        interpreter, failure = _try_open(model_bytes, size)
        if interpreter is not None:
            return interpreter, None
        size *= 2
    return None, failure


def _works(model_bytes, arena_size):
    """Whether TFLM allocates and invokes the model in ``arena_size`` bytes, tried in a forked child: not every
    TFLM kernel checks its persistent allocations (DEPTHWISE_CONV_2D's per-channel multipliers), so an arena a
    few bytes short can crash the process instead of failing."""
    pid = os.fork()
    if pid == 0:
        works = False
        try:
            works = _allocates_and_invokes(model_bytes, arena_size)
        finally:
            os._exit(0 if works else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _allocates_and_invokes(model_bytes, arena_size):
    interpreter, _ = _try_open(model_bytes, arena_size)
    if interpreter is None:
        return False
    try:
        invoke(interpreter, zero_inputs(interpreter))
    except TinyVisionError:
        return False
    return True


def _search_min_arena(model_bytes, name):
    """Smallest arena_size that allocates and invokes (bisection over bytes).

    TFLM's total at a generous, 16-aligned-ending arena bounds the answer: the head is
    fixed and only the tail's end padding (< 16 bytes) can be saved with another size.
    The search stays far above the tiny sizes at which TFLM crashes (its own objects do
    not fit) rather than failing cleanly; each probe runs in a forked child (``_works``).
    """
    interpreter = open_interpreter(model_bytes, None, name)
    invoke(interpreter, zero_inputs(interpreter), name)
    total = arena_report(interpreter).total_bytes
    del interpreter
    failing, step = total - _ALIGN, _ALIGN
    while _works(model_bytes, failing):
        failing, step = failing - step, step * 2
        if failing < total // 2:
            raise TinyVisionError(f"TFLM runs {name} in {failing} bytes, far below its reported {total}")
    working, step = total, _ALIGN
    while not _works(model_bytes, working):
        failing, working, step = working, working + step, step * 2
        if working > _LARGEST_ARENA:
            raise TinyVisionError(f"no arena up to {_LARGEST_ARENA} bytes runs {name}")
    while working - failing > 1:
        middle = (working + failing) // 2
        if _works(model_bytes, middle):
            working = middle
        else:
            failing = middle
    return working


def _first_message(error):
    """tf.lite.Interpreter's reason as one line: it joins one message per bad tensor without separators
    (person_detect: 14 of them), so keep the first and count the rest."""
    text = " ".join(str(error).split())
    head = text[:40]
    again = text.find(head, 1) if len(text) >= 80 else -1
    if again > 0:
        return f"{text[:again].strip()} (and {text.count(head) - 1} more like it)"
    return text


def _tflm_message(output, error):
    """TFLM's printed reason (its last few lines) plus the Python exception, as one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return "; ".join(lines[-3:] + [str(error)])
