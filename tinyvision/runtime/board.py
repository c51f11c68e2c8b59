"""Run an exported Arduino sketch off the board: on the host, or on an emulated Cortex-M4F.

``run_sketch(sketch_dir, target)`` compiles the sketch folder that ``export --arduino`` writes
(its .ino, tflm_app's runtime and TFLM glue, the generated model arrays, plan and test image)
together with ``tflm_app/harness`` (the Arduino API it uses, a ``main`` that runs ``setup()``
and one ``loop()``) against the board's TFLM library (``tinyvision.runtime.arduino_lib``), and
runs it:

- ``"host"``: a native program (g++), the whole bundle in ONE arena exactly as on the board;
- ``"cortex-m4"``: arm-none-eabi-g++ with the library's CMSIS-NN kernels, run under
  ``qemu-system-arm -machine mps2-an386`` with 256 KB of RAM enforced by the MPU, semihosting for
  output and ``-icount shift=0``, so that the harness clock counts instructions.

The result (``SketchRun``) holds the sketch's own Serial lines, every stage buffer and the tail's
outputs (as each was complete), the arena bytes TFLM touched, and the clock per stage (instructions on
the emulator).
"""
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.fileio import atomic_write_bytes
from tinyvision.runtime import arduino_lib

QEMU = "qemu-system-arm"
OBJCOPY = "arm-none-eabi-objcopy"
QEMU_ARGS = ("-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none", "-serial", "none",
             "-semihosting-config", "enable=on,target=native", "-icount", "shift=0")
SKETCH_CXX_FLAGS = ("-std=gnu++17", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics")
PLATFORM_SOURCE = {"host": "platform_host.cpp", "cortex-m4": "platform_m4.c"}
BOARD_HZ = 64_000_000  # Nano 33 BLE: nRF52840 Cortex-M4F at 64 MHz

NANO_MEMORY = (1024 * 1024, 256 * 1024)  # (code, RAM) bytes of a sketch exported before build_config.h named them
_BOARD_MEMORY = re.compile(r"#define TINYVISION_BOARD_(RAM|FLASH)_BYTES (\d+)")
# A classifier's line starts "class=<index>", a detector's "detections=<count>", that of a model with several
# outputs "outputs=<count>".
_SKETCH_LINE = re.compile(r"^(?:class=(-?\d+)|detections=\d+|outputs=\d+).* copy_ms=([\d.]+) create_ms=([\d.]+) "
                          r"arena_used=(\d+)/(\d+)")
# The harness's name of the tail's output i: "scores" for 0, "scores<i>" for the others.
_OUTPUT_NAME = re.compile(r"scores(\d*)\Z")


@dataclasses.dataclass
class SketchRun:
    """One run of a sketch by the harness.

    target: "host" or "cortex-m4"; lines: the sketch's own Serial output; error: the sketch's
    "tinyvision error: ..." line, or None; stages: per stage, the flat int8 buffer once complete;
    scores: the tail's int8 outputs, flat and concatenated in output order (the one output of most
    models), or None when the tail did not run; outputs: each output's flat int8 values, in output
    order; clocks: {"setup0", "stage0", ..., "tail0": nanoseconds}, which
    on the emulator are instructions; create_ms / copy_ms: the sketch's; arena: the harness's
    ``arena`` line ({"size", "shared", "persistent", "used", "creation", "tflm_max"}, bytes);
    profile: with ``profile=True``, per model index a ``ModelProfile`` of it created and invoked alone.
    """

    target: str
    lines: list
    error: str
    stages: list
    scores: np.ndarray
    clocks: dict
    counts_instructions: bool
    create_ms: float
    arena: dict
    predicted: int = -1
    copy_ms: float = 0.0
    profile: dict = dataclasses.field(default_factory=dict)
    outputs: list = dataclasses.field(default_factory=list)

    def instructions(self):
        """{"setup", "stage 0", ..., "tail", "inference", "creation"}: instructions on the emulator."""
        if not self.counts_instructions:
            raise TinyVisionError("instructions are counted on the emulated Cortex-M4 only")
        out = {"setup": self.clocks["setup0"]}
        for k in range(len(self.stages)):
            out[f"stage {k}"] = self.clocks[f"stage{k}"]
        out["tail"] = self.clocks["tail0"]
        out["inference"] = sum(self.clocks[f"stage{k}"] for k in range(len(self.stages))) + out["tail"]
        out["creation"] = int(round(self.create_ms * 1e6))  # the sketch prints 0.1 ms, i.e. 100,000 instructions
        out["copy"] = int(round(self.copy_ms * 1e6))
        return out


@dataclasses.dataclass
class ModelProfile:
    """One model of a sketch's plan, created and invoked alone by the profiling harness: create (clock of its
    MicroInterpreter's construction and AllocateTensors) and ops ([(operator name, clock)] of one Invoke, in
    the model's order); on the emulator, instructions. None for a model that could not run alone."""

    create: int = None
    ops: list = dataclasses.field(default_factory=list)


def build_sketch(sketch_dir, target="host", lib_dir=None, build_dir=None, jobs=None, obj_cache=None,
                 verbose=False, profile=False):
    """Path of the harness program (host) or ELF (cortex-m4) built from ``sketch_dir``.

    lib_dir: the Arduino TFLM library (default ``arduino_lib.default_lib_dir()``), built once and
    cached (``arduino_lib.build_library``); the sketch is compiled into ``build_dir`` (default
    ``<sketch_dir>/.harness-build``). profile: after the inference, the harness creates and invokes every
    model alone and prints the clock of its creation and of each operator (``SketchRun.profile``). obj_cache: a folder keeping the sketch's object files keyed by
    their source, the files they include and the command, for callers that build many similar sketches.
    TinyVisionError for a missing toolchain or library, or a compile error.
    """
    sketch_dir = os.path.abspath(os.fspath(sketch_dir))
    harness_dir = harness_folder()
    ino = [f for f in os.listdir(sketch_dir) if f.endswith(".ino")]
    if len(ino) != 1:
        raise TinyVisionError(f"{sketch_dir} is not an exported sketch (expected one .ino, found {len(ino)})")
    lib = arduino_lib.build_library(lib_dir, target, jobs=jobs, verbose=verbose)
    build_dir = os.path.abspath(build_dir or os.path.join(sketch_dir, ".harness-build"))
    os.makedirs(build_dir, exist_ok=True)
    includes = (sketch_dir, harness_dir, *lib.include_dirs)
    flash_bytes, ram_bytes = board_memory(sketch_dir)
    sources = [os.path.join(sketch_dir, f) for f in sorted(os.listdir(sketch_dir)) if f.endswith(".cpp")]
    sources += [os.path.join(harness_dir, "harness_main.cpp"), os.path.join(harness_dir, PLATFORM_SOURCE[target])]
    commands, objects, cached = [], [], []
    for i, src in enumerate(sources):
        obj = os.path.join(build_dir, f"{i:03d}_{os.path.basename(src)}.o")
        cmd = arduino_lib.compile_command(lib.target, src, obj, includes)
        if not src.endswith(".c"):  # the sketch's own sources are C++17
            cmd = [c for c in cmd if c not in arduino_lib.CXX_FLAGS]
            cmd[1:1] = SKETCH_CXX_FLAGS
        if src.endswith("harness_main.cpp"):
            cmd.insert(1, f'-DTINYVISION_SKETCH="{os.path.join(sketch_dir, ino[0])}"')
            if profile:
                cmd.insert(1, "-DTINYVISION_HARNESS_PROFILE")
        if src.endswith(PLATFORM_SOURCE["cortex-m4"]):
            cmd.insert(1, f"-DHARNESS_RAM_LOG2={ram_bytes.bit_length() - 1}")
        objects.append(obj)
        if obj_cache:
            key = _object_key(cmd, src, sketch_dir, build_dir, harness_dir)
            keep = os.path.join(obj_cache, key + ".o")
            cached.append((obj, keep))
            if os.path.isfile(keep):
                shutil.copyfile(keep, obj)
                continue
        commands.append(cmd)
    arduino_lib.compile_all(commands, jobs or os.cpu_count() or 1)
    for obj, keep in cached:
        if not os.path.isfile(keep):
            with open(obj, "rb") as f:
                atomic_write_bytes(keep, f.read())  # other processes may fill the same cache
    if target == "host":
        exe = os.path.join(build_dir, "sketch")
        link = [lib.target.cxx, *lib.target.flags, *objects, lib.archive, "-lm", "-o", exe]
    else:
        exe = os.path.join(build_dir, "sketch.elf")
        script = os.path.join(build_dir, "mps2_an386.ld")
        with open(os.path.join(harness_dir, "mps2_an386.ld.in"), encoding="utf-8") as f:
            layout = f.read().replace("@FLASH_BYTES@", str(flash_bytes)).replace("@RAM_BYTES@", str(ram_bytes))
        with open(script, "w", encoding="utf-8") as f:
            f.write(layout)
        link = [lib.target.cxx, *lib.target.flags, "--specs=rdimon.specs", "-nostartfiles",
                "-T", script, "-Wl,--gc-sections", *objects, lib.archive,
                "-lm", "-o", exe]
    done = subprocess.run(link, capture_output=True, text=True)
    if done.returncode != 0:
        raise TinyVisionError(f"linking the {target} harness failed: {done.stderr.strip()[-1500:]}")
    return exe


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def _local_includes(path, folders, seen):
    """The files of ``folders`` that ``path`` includes with "...", transitively (added to ``seen``)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        names = _INCLUDE.findall(f.read())
    for name in names:
        for folder in folders:
            found = os.path.join(folder, name)
            if os.path.isfile(found) and found not in seen:
                seen.add(found)
                _local_includes(found, folders, seen)
                break
    return seen


def harness_folder():
    """tflm_app/harness: the Arduino API and ``main`` the sketch is built with off the board."""
    from converters.export.arduino import tflm_app_dir

    return os.path.join(tflm_app_dir(), "harness")


def board_memory(sketch_dir):
    """(code bytes, RAM bytes) of the board the sketch was exported for (its build_config.h), the emulator's
    memory map: powers of two of at most the mps2-an386's 4 MB each."""
    try:
        with open(os.path.join(sketch_dir, "build_config.h"), encoding="utf-8") as f:
            found = dict(_BOARD_MEMORY.findall(f.read()))
    except OSError:
        found = {}
    flash, ram = (int(found.get(key, default)) for key, default in zip(("FLASH", "RAM"), NANO_MEMORY))
    limit = 4 * 1024 * 1024
    if not 0 < flash <= limit or not 0 < ram <= limit or ram & (ram - 1):
        raise TinyVisionError(f"{sketch_dir}: the board's memory ({flash:,} B code, {ram:,} B RAM) does not fit the "
                              f"emulator's map (at most 4 MB each, RAM a power of two)")
    return flash, ram


def _object_key(cmd, src, sketch_dir, build_dir, harness_dir):
    """sha256 of the compile command (paths of the sketch and build folders left out), the source and every
    file of the sketch or the harness it includes: objects of unchanged sources are shared between sketches."""
    h = hashlib.sha256(" ".join(cmd).replace(sketch_dir, "<sketch>").replace(build_dir, "<build>").encode())
    for path in [src, *sorted(_local_includes(src, (sketch_dir, harness_dir), set()))]:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + hashlib.sha256(f.read()).digest())
    if src.endswith("harness_main.cpp"):  # includes the .ino through a macro
        ino = next(f for f in os.listdir(sketch_dir) if f.endswith(".ino"))
        for path in sorted(_local_includes(os.path.join(sketch_dir, ino), (sketch_dir, harness_dir), set())):
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        with open(os.path.join(sketch_dir, ino), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def run_program(exe, target, timeout=600):
    """Runs a built harness; the ``SketchRun`` it printed. TinyVisionError when it printed no result."""
    cmd = [exe] if target == "host" else [_qemu(), *QEMU_ARGS, *_code_image(exe)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinyVisionError(f"the {target} run of the sketch did not finish within {timeout} s") from None
    return parse_output(done.stdout, target, done.stderr)


def _code_image(elf):
    """qemu's arguments that load ``elf`` as one raw image of the code memory at address 0 (vector table,
    code, constants and .data's initial values): qemu 7.2's -kernel leaves the code memory empty for an ELF
    of about 4 MB (a 224 px model's weights), whose first instruction then reads as zeros and locks up."""
    image = os.path.splitext(elf)[0] + ".bin"
    done = subprocess.run([OBJCOPY, "-O", "binary", elf, image], capture_output=True, text=True)
    if done.returncode != 0:
        raise TinyVisionError(f"{OBJCOPY} could not make the emulator's image of {elf}: "
                              f"{done.stderr.strip()[-300:] or 'no output'}")
    return ["-device", f"loader,file={image},addr=0x0,force-raw=on"]


def _qemu():
    path = shutil.which(QEMU)
    if path is None:
        raise TinyVisionError(f"the Cortex-M4 emulator needs {QEMU} on PATH (Debian: apt-get install "
                              f"qemu-system-arm; scripts/install.sh installs it)")
    return path


def parse_output(text, target, stderr=""):
    """The ``SketchRun`` of the harness's output ``text`` (see tflm_app/harness/harness_main.cpp)."""
    lines, stages, outputs, clocks, arena = [], {}, {}, {}, {}
    error, code, counts, create_ms, copy_ms, predicted = None, None, False, 0.0, 0.0, -1
    profile = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head == "profile":
            _add_profile_line(profile, rest.split())
        elif head == "buffer":
            name, _, hexdigits = rest.partition(" ")
            values = np.frombuffer(bytes.fromhex(hexdigits), dtype=np.int8)
            output = _OUTPUT_NAME.match(name)
            if output:
                outputs[int(output.group(1) or 0)] = values
            else:
                stages[int(name)] = values
        elif head == "clock":
            name, value = rest.split()
            clocks[name] = int(value)
        elif head == "arena":
            arena = {k: int(v) for k, v in (item.split("=") for item in rest.split())}
        elif line.startswith("harness exit "):
            code = int(line.split()[-1])
        elif line.startswith("harness "):
            counts = counts or rest == "instructions"
        else:
            lines.append(line)
            if line.startswith("tinyvision error: ") and error is None:
                error = line[len("tinyvision error: "):]
            m = _SKETCH_LINE.search(line)
            if m:
                predicted, copy_ms, create_ms = int(m.group(1) or -1), float(m.group(2)), float(m.group(3))
    if code is None:  # the emulator's own fatal line (a lockup) says more than the register dump after it
        fatal = [line for line in stderr.splitlines() if line.startswith("qemu: fatal:")]
        tail = fatal[0] if fatal else "; ".join((lines + stderr.strip().splitlines())[-3:]) or "no output"
        raise TinyVisionError(f"the {target} run of the sketch ended without a result: {tail}")
    if code == 2:
        raise TinyVisionError(f"the sketch faulted on the emulated Cortex-M4 (out of the board's RAM, or a bad "
                              f"access): {'; '.join(lines[-3:])}")
    if sorted(outputs) != list(range(len(outputs))):
        raise TinyVisionError(f"the {target} run of the sketch printed tail outputs {sorted(outputs)}, not 0 to "
                              f"{len(outputs) - 1}")
    ordered = [stages[k] for k in sorted(stages)]
    tail = [outputs[i] for i in range(len(outputs))]
    scores = np.concatenate(tail) if tail else None
    return SketchRun(target, lines, error, ordered, scores, clocks, counts, create_ms, arena, predicted, copy_ms,
                     {m: p for m, p in profile.items() if p is not None}, tail)


def _add_profile_line(profile, words):
    """Records one ``profile`` line's words (after "profile") in ``profile`` ({model: ModelProfile or None})."""
    kind, model = words[0], int(words[1])
    if kind == "model" and words[2] == "failed":
        profile[model] = None
    elif kind == "model":
        profile[model] = ModelProfile(create=int(words[3]))
    elif profile.get(model) is not None:
        profile[model].ops.append((words[3], int(words[4])))


def run_sketch(sketch_dir, target="host", lib_dir=None, jobs=None, timeout=600, obj_cache=None, verbose=False,
               profile=False):
    """Build ``sketch_dir`` for ``target`` in a temporary folder and run it once: a ``SketchRun``."""
    with tempfile.TemporaryDirectory(prefix="tinyvision-harness-") as build_dir:
        exe = build_sketch(sketch_dir, target, lib_dir, build_dir, jobs=jobs, obj_cache=obj_cache, verbose=verbose,
                           profile=profile)
        return run_program(exe, target, timeout)


@dataclasses.dataclass
class Emulation:
    """A bundle's exported sketch on a board runtime next to the host ``PatchRunner`` on the same image.

    run: the ``SketchRun``; host_scores / host_stages: the host's tail output and flat stage buffers;
    stage_mismatches: per stage, the values that differ; score_diff: max |board - host| over the scores;
    board_differences: what ``converters.export.board_kernels`` says the board's library computes differently
    (``BoardDifference`` lines), the known causes of a score_diff.
    """

    run: SketchRun
    host_scores: np.ndarray
    host_stages: list
    stage_mismatches: list
    score_diff: int
    board_differences: tuple = ()

    @property
    def bit_exact(self):
        return not any(self.stage_mismatches) and self.score_diff == 0


def run_bundle(model_path, targets=("cortex-m4",), lib_dir=None, image=None, jobs=None, timeout=600, obj_cache=None,
               verbose=False, board="nano33ble", profile=False):
    """Export ``model_path`` (a bundle folder, or a .tflite run whole) as a sketch for ``board`` with ``image`` as
    its test image and run it on each of ``targets`` and on the host's ``PatchRunner``: {target: ``Emulation``}.

    image: as ``export_arduino``'s test_image (None: the built-in dataset's sample, an image file, pixels, or an
    int8 (H, W, C) image). board: the profile the sketch is exported for; the emulator takes its memory map
    (``"mps2-an386"``: 4 MB of RAM, for models too large for the Nano). profile: as ``build_sketch``'s.
    """
    from converters.export.arduino import export_arduino, load_for_export, prepare_test_image
    from converters.export.board_kernels import bundle_board_differences, difference_lines
    from tinyvision.runtime.patch_runner import PatchRunner

    bundle = load_for_export(os.fspath(model_path))
    for target in targets:  # a missing library, toolchain or emulator is named before anything runs
        arduino_lib.source_dir(lib_dir or arduino_lib.default_lib_dir())
        arduino_lib.get_target(target)
        if target == "cortex-m4":
            _qemu()
    known = tuple(difference_lines(bundle_board_differences(bundle)))
    x, _, _ = prepare_test_image(bundle, image)
    host_scores, host_stages = PatchRunner(bundle).run(x, return_stage=True, timeout=timeout)
    want = [s[0].reshape(-1) for s in host_stages]
    host = flat_outputs(host_scores)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tinyvision-emulate-") as folder:
        report = export_arduino(model_path, folder, board=board, test_image=x, verbose=False)
        for target in targets:
            run = run_sketch(report.sketch_dir, target, lib_dir, jobs=jobs, timeout=timeout, obj_cache=obj_cache,
                             verbose=verbose, profile=profile)
            results[target] = dataclasses.replace(compare_with_host(run, host, want), board_differences=known)
    return results


def flat_outputs(outputs):
    """The host ``PatchRunner``'s tail output for one image as ``SketchRun.scores`` holds the board's: flat int8
    values, the outputs of a tail with several (a list or tuple of arrays, each with its batch dimension)
    concatenated in output order."""
    from tinyvision.runtime.patch_runner import output_list

    return np.concatenate([np.asarray(y)[0].reshape(-1) for y in output_list(outputs)])


def compare_with_host(run, host_scores, host_stages):
    """The ``Emulation`` of a ``SketchRun`` against the host's flat scores (``flat_outputs``) and stage buffers."""
    if run.error is not None:
        raise TinyVisionError(f"the sketch failed on the {run.target} runtime: {run.error}")
    if run.scores is None or run.scores.shape != host_scores.shape or len(run.stages) != len(host_stages):
        raise TinyVisionError(f"the {run.target} runtime returned {len(run.stages)} stage buffers and "
                              f"{0 if run.scores is None else run.scores.size} scores; the host "
                              f"{len(host_stages)} and {host_scores.size}")
    mismatches = [int(np.count_nonzero(got != want)) if got.shape == want.shape else max(got.size, want.size)
                  for got, want in zip(run.stages, host_stages)]
    diff = int(np.abs(run.scores.astype(np.int32) - host_scores.astype(np.int32)).max())
    return Emulation(run, host_scores, host_stages, mismatches, diff)
