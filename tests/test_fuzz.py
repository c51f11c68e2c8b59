"""Fuzzing as a test: mutated models and tampered bundle plans through the CLI commands, each in a forked child.

TensorFlow is imported once, here; every case runs ``converters.cli.main.main`` (what the ``tinyvision``
command runs) in a child forked from this process, with an address-space limit (RLIMIT_AS), so a case
that allocates without bound fails in the child instead of exhausting the machine. Every case must end
with exit status 0 or one ``error:`` line on stderr: no traceback, no signal, no ``internal error``, no
second line; a failed command leaves no output behind, and no case changes its input. Every tampered
plan must be refused. The seed is fixed: a CI run replays the same cases.
"""
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time

import numpy as np
import pytest

MODEL_MUTATIONS = 1000
RANDOM_TAMPERS = 200
SEED = 11
WORKERS = 2
MEMORY_MARGIN = 2 << 30  # address space a child may add to what it inherits
CASE_TIMEOUT = 120


# ---------------------------------------------------------------- running one CLI command in a forked child


def _address_space():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(argv, out_path, err_path):
    """In the forked child: the limited CLI run, its stdout/stderr into files; never returns."""
    import resource

    code = 3
    try:
        limit = _address_space() + MEMORY_MARGIN
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        out, err = os.open(out_path, os.O_WRONLY), os.open(err_path, os.O_WRONLY)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = os.fdopen(1, "w", closefd=False)
        sys.stderr = os.fdopen(2, "w", closefd=False)
        from converters.cli.main import main

        code = main(argv)
    except BaseException:  # noqa: BLE001  the CLI must not let anything out: show it as a traceback
        import traceback

        traceback.print_exc()
        code = 4
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Case:
    """One CLI command on one input, run in a forked child: ``start``, then ``finish`` when it exited."""

    def __init__(self, label, argv, inputs, output=None, must_fail=False):
        self.label, self.argv, self.inputs, self.output, self.must_fail = label, argv, inputs, output, must_fail

    def start(self, scratch):
        self.before = _digest(self.inputs)
        self.out, self.err = (tempfile.mkstemp(dir=scratch)[1] for _ in range(2))
        self.pid = os.fork()
        if self.pid == 0:
            _child(["tinyvision"] + self.argv, self.out, self.err)
        self.started = time.time()

    def finish(self, status):
        """A list of problems (empty when the case behaved)."""
        with open(self.out, errors="replace") as f, open(self.err, errors="replace") as g:
            stdout, stderr = f.read(), g.read()
        os.unlink(self.out)
        os.unlink(self.err)
        problems = []
        lines = [line for line in stderr.splitlines() if line.strip()]
        if os.WIFSIGNALED(status):
            problems.append(f"killed by signal {os.WTERMSIG(status)}")
            code = None
        else:
            code = os.WEXITSTATUS(status)
        if "Traceback" in stderr or "Traceback" in stdout:
            problems.append("traceback")
        if any("internal error" in line for line in lines):
            problems.append("internal error")
        if code == 0 and self.must_fail:
            problems.append("accepted")
        if code not in (0, None):
            if len(lines) != 1 or not lines[0].startswith("error: "):
                problems.append(f"{len(lines)} stderr lines")
            if self.output and os.path.exists(self.output):
                problems.append("partial output")
        if _digest(self.inputs) != self.before:
            problems.append("input modified")
        if self.output and os.path.exists(self.output):
            shutil.rmtree(self.output) if os.path.isdir(self.output) else os.unlink(self.output)
        self.code = code
        return [f"{self.label} ({' '.join(self.argv)}): {p}: {(lines or [''])[-1][:300]}" for p in problems]


def _digest(paths):
    h = hashlib.sha256()
    for path in paths:
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
        for file in files:
            with open(file, "rb") as f:
                h.update(file.encode() + f.read())
    return h.hexdigest()


def run_cases(cases, scratch):
    """Run every case, ``WORKERS`` at a time; returns the problems (each case's exit status is its ``code``)."""
    pending, running, problems = list(cases), {}, []
    while pending or running:
        while pending and len(running) < WORKERS:
            case = pending.pop(0)
            case.start(scratch)
            running[case.pid] = case
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for case in running.values():
                if time.time() - case.started > CASE_TIMEOUT:
                    os.kill(case.pid, signal.SIGKILL)
            time.sleep(0.005)
            continue
        problems += running.pop(pid).finish(status)
    return problems


# ---------------------------------------------------------------- model mutations (TensorFlow's object API)


def _mutations():
    from tensorflow.lite.python import schema_py_generated as schema

    def ops(m):
        return m.subgraphs[0].operators

    def tensors(m):
        return m.subgraphs[0].tensors

    def pick(rng, items):
        return items[rng.randrange(len(items))]

    def bad_index(rng, n):
        return pick(rng, [-2, -1, n, n + 1, 9999, 2**31 - 1, rng.randrange(max(n, 1))])

    def opcode_index(m, rng):
        pick(rng, ops(m)).opcodeIndex = bad_index(rng, len(m.operatorCodes))

    def tensor_index(m, rng):
        op = pick(rng, ops(m))
        ios = op.inputs if rng.random() < 0.7 or not len(op.outputs) else op.outputs
        ios[rng.randrange(len(ios))] = bad_index(rng, len(tensors(m)))

    def graph_io(m, rng):
        sg = m.subgraphs[0]
        if rng.random() < 0.3:
            sg.outputs = np.zeros(0, np.int32)
        else:
            ios = sg.inputs if rng.random() < 0.5 else sg.outputs
            ios[0] = bad_index(rng, len(sg.tensors))

    def signature(m, rng):
        if not m.signatureDefs:
            return opcode_index(m, rng)
        s = m.signatureDefs[0]
        if rng.random() < 0.5:
            s.subgraphIndex = pick(rng, [1, 5, -1])
        else:
            pick(rng, s.inputs + s.outputs).tensorIndex = bad_index(rng, len(tensors(m)))

    def shape(m, rng):
        t = pick(rng, tensors(m))
        if t.shape is None or not len(t.shape):
            t.shape = np.asarray([pick(rng, [0, 3, 2**20])], np.int32)
            return
        d = rng.randrange(len(t.shape))
        t.shape[d] = pick(rng, [0, -1, 1, int(t.shape[d]) + 1, 2 * int(t.shape[d]), 20000, 2**20, 2**31 - 1])

    def huge_input(m, rng):
        t = tensors(m)[m.subgraphs[0].inputs[0]]
        t.shape = np.asarray(pick(rng, [[1, 40000, 40000, 8], [1, 2**16, 2**16, 3], [1, 24, 24, 2**30]]), np.int32)

    def options_with(m, rng, field_names):
        found = [op for op in ops(m) if op.builtinOptions is not None
                 and any(hasattr(op.builtinOptions, f) for f in field_names)]
        if not found:
            return False
        options = pick(rng, found).builtinOptions
        name = pick(rng, [f for f in field_names if hasattr(options, f)])
        setattr(options, name, pick(rng, [0, -1, 2, 3, 7, 100, 2**31 - 1]))
        return True

    def stride(m, rng):
        options_with(m, rng, ["strideH", "strideW", "dilationHFactor", "dilationWFactor", "filterHeight",
                              "filterWidth", "depthMultiplier"])

    def options(m, rng):
        op = pick(rng, ops(m))
        choice = rng.randrange(4)
        if choice == 0:
            op.builtinOptions, op.builtinOptionsType = None, 0
        elif choice == 1:
            op.builtinOptions, op.builtinOptionsType = schema.Pool2DOptionsT(), schema.BuiltinOptions.Pool2DOptions
        elif choice == 2:
            op.builtinOptions = schema.ReshapeOptionsT()  # the type tag says otherwise
        elif not options_with(m, rng, ["fusedActivationFunction", "padding", "keepDims", "axis"]):
            op.builtinOptions = None

    def opcode(m, rng):
        code = pick(rng, m.operatorCodes)
        value = pick(rng, [0, 1, 3, 4, 17, 22, 40, 49, 150, 255, 999])
        code.builtinCode = value
        code.deprecatedBuiltinCode = min(value, 127)

    def dtype(m, rng):
        pick(rng, tensors(m)).type = rng.randrange(0, 20)

    def quantization(m, rng):
        quantized = [t for t in tensors(m) if t.quantization is not None and t.quantization.scale is not None]
        q = pick(rng, quantized).quantization
        choice = rng.randrange(6)
        if choice == 0:
            q.scale = np.asarray([pick(rng, [0.0, -1.0, np.nan, np.inf, 1e-30, 1e30])], np.float32)
        elif choice == 1:
            q.zeroPoint = np.asarray(list(q.zeroPoint) + [0, 0], np.int64)
        elif choice == 2:
            q.quantizedDimension = pick(rng, [1, 3, 7, -1])
        elif choice == 3:
            q.scale = np.asarray(list(q.scale) * 3, np.float32)
        elif choice == 4:
            q.zeroPoint = np.asarray([pick(rng, [-129, 128, 2**40])] * len(q.zeroPoint), np.int64)
        else:
            q.scale = np.asarray(q.scale, np.float32) * np.float32(pick(rng, [1000.0, 0.001]))

    def buffer(m, rng):
        used = [t for t in tensors(m) if t.buffer and m.buffers[t.buffer].data is not None]
        choice = rng.randrange(4)
        if choice == 0 or not used:
            pick(rng, tensors(m)).buffer = bad_index(rng, len(m.buffers))
        else:
            b = m.buffers[pick(rng, used).buffer]
            data = np.asarray(b.data, np.uint8)
            b.data = (data[: rng.randrange(len(data))] if choice == 1 else
                      np.concatenate([data, np.zeros(rng.randrange(1, 64), np.uint8)]) if choice == 2 else
                      data ^ np.uint8(rng.randrange(1, 256)))

    def dataflow(m, rng):
        chosen = rng.randrange(len(ops(m)))
        op = ops(m)[chosen]
        later = [o for o in ops(m)[chosen:] if len(o.outputs)]
        op.inputs[0] = pick(rng, later).outputs[0]  # a cycle, or a self-loop when it is the op itself

    return [opcode_index, tensor_index, graph_io, signature, shape, huge_input, stride, options, opcode, dtype,
            quantization, buffer, dataflow]


def mutated_models(model_bytes, count, rng):
    """``count`` (label, bytes) mutants of ``model_bytes``: one object-API mutation each, or a byte flip /
    truncation of the serialized model for one in five."""
    from tensorflow.lite.tools import flatbuffer_utils

    original = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    mutations = _mutations()
    out = []
    for i in range(count):
        if i % 5 == 4:
            data = bytearray(model_bytes)
            if rng.random() < 0.2:
                out.append((f"truncated #{i}", bytes(data[: rng.randrange(8, len(data))])))
                continue
            for _ in range(rng.randrange(1, 9)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            out.append((f"byte flips #{i}", bytes(data)))
            continue
        mutation = mutations[i % len(mutations)]
        model = copy.deepcopy(original)
        mutation(model, rng)
        try:
            data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        except Exception:  # noqa: BLE001  a mutant the serializer itself cannot write is no file at all
            data = bytes(model_bytes[:4]) + b"TFL3" + bytes(8)
        out.append((f"{mutation.__name__} #{i}", data))
    return out


# ---------------------------------------------------------------- tampered plans


def _leaves(value, path=()):
    """(path, value) of every number, bool and string in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, path + (key,))
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from _leaves(item, path + (k,))
    else:
        yield path, value


# Plan fields the model files do not determine: names, class labels, the source (its identity and edges), a
# stage's source tensor name, the unsplit baseline's flash (analyze measures the source itself) and the window
# positions (the bit-exact check against the source catches those: ``export --arduino`` runs it).
_FREE = {"source", "tensor", "unplanned_reason", "name", "file", "flash_bytes", "format", "labels"}


def _tamperable(path):
    if path[0] == "stats" and path[-1] == "flash_bytes" and len(path) == 2:
        return True
    if path[0] == "patches" and path[2] == "window" and path[3] in ("x", "y"):
        return False
    return not _FREE & {p for p in path if isinstance(p, str)}


def _set(doc, path, value):
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def random_tampers(plan, count, rng):
    """``count`` (label, plan) with one derived or checked leaf changed to another value."""
    leaves = [(path, value) for path, value in _leaves(plan) if _tamperable(path)]
    out = []
    while len(out) < count:
        path, value = leaves[rng.randrange(len(leaves))]
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, (int, float)):
            new = rng.choice([value + 1, value - 1, value + 16, value * 2 + 1, -5, 0, 16, 0.5, True, str(value),
                              None, 999_999_999_999_999, value + 1e-3, [value]])
        else:
            new = rng.choice([value + "x", "", 3, None])
        if new == value and type(new) is type(value):
            continue
        doc = copy.deepcopy(plan)
        _set(doc, path, new)
        out.append((f"{'.'.join(map(str, path))}={new!r}", doc))
    return out


def named_tampers(plan):
    """The tampered plans issue 11 lists, as (label, plan or raw text)."""
    cases = []

    def edit(label, change):
        doc = copy.deepcopy(plan)
        change(doc)
        cases.append((label, doc))

    arena = plan["arena"]
    if len(arena["stages"]) > 1:
        def swap(doc):
            a, b = doc["arena"]["stages"][0], doc["arena"]["stages"][1]
            a["offset"], b["offset"] = b["offset"], a["offset"]
        edit("stage offsets swapped", swap)
    edit("persistent sections 16 B", lambda d: [s.update(size=16) for s in d["arena"]["persistent"]])
    edit("persistent sections and bytes 16 B", lambda d: [s.update(size=16) for s in d["arena"]["persistent"]]
         + [m.update(persistent_bytes=16) for m in d["models"]])
    if "temp_reserve" in arena:
        edit("temp_reserve 0", lambda d: d["arena"].update(temp_reserve=0))
    edit("nonpersistent_bytes -5", lambda d: d["models"][0].update(nonpersistent_bytes=-5))
    edit("nonpersistent_bytes 16", lambda d: d["models"][0].update(nonpersistent_bytes=16))
    edit("offline_plans false", lambda d: d["arena"].update(offline_plans=False))
    edit("stats MACs", lambda d: d["stats"].update(macs=d["stats"]["macs"] // 2))
    edit("model MACs", lambda d: d["models"][-1].update(macs=1))
    edit("arena size", lambda d: d["arena"].update(size=999_999_999_999_999))
    for x in (0.0, 0.5, True, "3"):
        edit(f"window x {x!r}", lambda d, x=x: d["patches"][0]["window"].update(x=x))
    edit("window w 'wide'", lambda d: d["patches"][0]["window"].update(w="wide"))
    edit("stage shape 20000x20000x8", lambda d: d["stages"][0].update(shape=[20000, 20000, 8]))
    cases.append(("deeply nested plan", "[" * 100_000 + "]" * 100_000))
    cases.append(("nested inside the plan", json.dumps(plan)[:-1] + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}"))
    return cases


# ---------------------------------------------------------------- fixtures and the test


# What the analyze, convert and export commands import, imported once here so the children start warm (the
# command modules themselves define their flags and are imported by each child, as the CLI does).
COMMAND_IMPORTS = ("converters.cli.runner", "converters.cli.bundle_report", "converters.export.arduino",
                   "converters.export.c_array", "converters.optimize", "converters.quantize",
                   "tinyvision.analysis.report", "tinyvision.bundle")


@pytest.fixture(scope="module")
def fuzz_inputs(tmp_path_factory, small_cnn_tflite):
    """The small CNN as model.tflite and three bundles of it next to it (one interpreter at a time, resident,
    two stages), built here so the children inherit TFLM's measurements of their models."""
    import importlib

    from converters.patching import split_patch_stage, split_points, split_stages, write_bundle
    from converters.patching.bundle import finalize

    for module in COMMAND_IMPORTS:
        importlib.import_module(module)
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "model.tflite").write_bytes(small_cnn_tflite)
    points = split_points(small_cnn_tflite)
    bundles = {}
    for label, split, mode in (("one_at_a_time", lambda: split_patch_stage(small_cnn_tflite, points[-1], 2),
                                "one_at_a_time"),
                               ("resident", lambda: split_patch_stage(small_cnn_tflite, points[-1], 2), "resident"),
                               ("two_stages", lambda: split_stages(small_cnn_tflite, [(points[0], 2),
                                                                                       (points[-1], (2, 3))]),
                                "one_at_a_time")):
        bundles[label] = write_bundle(finalize(split(), interpreters=mode), folder / label)
    return folder, small_cnn_tflite, bundles


def _model_case(folder, k, label, data, scratch):
    path = os.path.join(scratch, f"mutant{k}.tflite")
    with open(path, "wb") as f:
        f.write(data)
    out = os.path.join(scratch, f"out{k}")
    command = k % 4  # convert runs in-process only (no TFLM subprocess): the cheapest, so the most frequent
    if command == 0:
        return Case(label, ["export", f"--model={path}", f"--output={out}"], [path], out)
    if command in (1, 3):
        return Case(label, ["convert", f"--model={path}", f"--output={out}.tflite", "--noverify"], [path],
                    out + ".tflite")
    return Case(label, ["analyze", f"--model={path}", "--noverify", "--json"], [path])


def _tamper_case(k, label, plan, bundle, scratch):
    folder = os.path.join(scratch, f"tampered{k}")
    shutil.copytree(bundle, folder)
    with open(os.path.join(folder, "plan.json"), "w") as f:
        f.write(plan if isinstance(plan, str) else json.dumps(plan))
    if k % 2:
        out = os.path.join(scratch, f"sketch{k}")
        return Case(label, ["export", f"--model={folder}", "--arduino", "--noverify", f"--output={out}"], [folder],
                    out, must_fail=True)
    return Case(label, ["analyze", f"--model={folder}", "--noverify", "--json"], [folder], must_fail=True)


def test_fuzz_models_and_plans(fuzz_inputs, capsys):
    folder, model_bytes, bundles = fuzz_inputs
    import resource

    rng = random.Random(SEED)
    start = time.time()
    cpu = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        cases = [_model_case(folder, k, label, data, scratch)
                 for k, (label, data) in enumerate(mutated_models(model_bytes, MODEL_MUTATIONS, rng))]
        tampers = []
        for name, bundle in bundles.items():
            with open(os.path.join(bundle, "plan.json")) as f:
                plan = json.load(f)
            tampers += [(f"{name}: {label}", doc, bundle) for label, doc in named_tampers(plan)]
            tampers += [(f"{name}: {label}", doc, bundle)
                        for label, doc in random_tampers(plan, RANDOM_TAMPERS // len(bundles) + 1, rng)]
        cases += [_tamper_case(k, label, doc, bundle, scratch) for k, (label, doc, bundle) in enumerate(tampers)]
        problems = run_cases(cases, scratch)
    accepted_models = sum(case.code == 0 for case in cases[:MODEL_MUTATIONS])
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own, children = (u.ru_utime + u.ru_stime - c.ru_utime - c.ru_stime for u, c in zip(used, cpu))
    with capsys.disabled():
        print(f"\nfuzz: {MODEL_MUTATIONS} mutated models ({accepted_models} accepted as valid), {len(tampers)} "
              f"tampered plans, {len(problems)} problems; {time.time() - start:.0f} s, CPU {own:.0f} s here and "
              f"{children:.0f} s in the children")
    assert not problems, "\n".join(problems[:40])
    assert len(tampers) >= 200
