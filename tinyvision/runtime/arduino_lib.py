"""The board's TFLM library (an Arduino TFLM library folder such as Chirale_TensorFlowLite) as a static library.

``build_library(lib_dir, target)`` compiles every C/C++ source of the library's ``src/`` the way the
Arduino builder compiles it for the Nano 33 BLE, for one of two targets:

- ``"host"``: g++/gcc for this machine in 32-bit mode (``-m32``, Debian: g++-multilib), so that TFLM's
  objects in the arena take the sizes they take on the board (the CMSIS-NN kernels take their portable C paths);
- ``"cortex-m4"``: arm-none-eabi-g++/gcc for the Cortex-M4F of the board (hard float, CMSIS-NN's DSP paths).

Left out: the microfrontend and kissfft (audio), and the two files that include ``Arduino.h``
(``tensorflow/lite/micro/system_setup.cpp`` and ``peripherals/``), whose few functions the harness
(``tflm_app/harness``) provides. The result, ``libtflm.a``, is cached under ``cache_dir()`` keyed by
the library's content, the compiler's version and the flags, so a CI run builds each target once.
"""
import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
import time

from tinyvision.errors import TinyVisionError

LIB_NAME = "Chirale_TensorFlowLite"
SKIPPED = ("tensorflow/lite/experimental/microfrontend/", "third_party/kissfft/", "peripherals/",
           "tensorflow/lite/micro/system_setup.cpp")
INCLUDES = ("", "third_party/flatbuffers/include", "third_party/gemmlowp", "third_party/ruy")
# The Nano 33 BLE core compiles libraries with -DARDUINO, gnu++14, unsigned char and without exceptions or RTTI.
COMMON_FLAGS = ("-DARDUINO", "-funsigned-char", "-ffunction-sections", "-fdata-sections")
CXX_FLAGS = ("-std=gnu++14", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics")
C_FLAGS = ("-std=gnu11",)
M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")


@dataclasses.dataclass(frozen=True)
class Target:
    """A compiler set and the flags of one build target."""

    name: str
    cc: str
    cxx: str
    ar: str
    flags: tuple  # arch + optimization, for C and C++ alike


TARGETS = {
    # -m32: TFLM's structures in the persistent arena have the board's 32-bit pointer sizes, so a bundle's
    # arena plan (made for the board) holds on the host too; SSE float math rounds every float operation to
    # single precision as the Cortex-M4F's FPU does (x87 would keep excess precision).
    "host": Target("host", "gcc", "g++", "ar", ("-m32", "-msse2", "-mfpmath=sse", "-O2")),
    # -Os: the optimization the Nano 33 BLE (mbed) core builds with.
    "cortex-m4": Target("cortex-m4", "arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-ar", (*M4_FLAGS, "-Os")),
}


@dataclasses.dataclass(frozen=True)
class Library:
    """A built library: ``archive`` (libtflm.a), the ``include_dirs`` to compile against it, and how it was got."""

    archive: str
    include_dirs: tuple
    target: Target
    cached: bool  # True when it came from the cache
    seconds: float  # build time (0 when cached)


def default_lib_dir():
    """The Arduino IDE's libraries folder copy of Chirale_TensorFlowLite (``~/Arduino/libraries``)."""
    return os.path.join(os.path.expanduser("~"), "Arduino", "libraries", LIB_NAME)


def cache_dir():
    """``$TINYVISION_CACHE`` or ``~/.cache/tinyvision``."""
    return os.environ.get("TINYVISION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinyvision")


def get_target(name):
    if name not in TARGETS:
        raise TinyVisionError(f"unknown build target {name!r} (expected one of {', '.join(TARGETS)})")
    target = TARGETS[name]
    missing = [tool for tool in (target.cc, target.cxx, target.ar) if shutil.which(tool) is None]
    if missing:
        hint = (" (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib)"
                if name == "cortex-m4" else "")
        raise TinyVisionError(f"building for {name} needs {', '.join(missing)} on PATH{hint}")
    return target


def source_dir(lib_dir):
    """The library's ``src/`` folder; TinyVisionError when ``lib_dir`` is not an Arduino TFLM library."""
    src = os.path.join(os.fspath(lib_dir), "src")
    marker = os.path.join(src, "tensorflow", "lite", "micro", "micro_interpreter.h")
    if not os.path.isfile(marker):
        raise TinyVisionError(f"{lib_dir} is not an Arduino TFLM library (no src/tensorflow/lite/micro/"
                              f"micro_interpreter.h): give --arduino_lib=PATH to Chirale_TensorFlowLite")
    return src


def include_dirs(lib_dir):
    src = source_dir(lib_dir)
    return tuple(os.path.join(src, d) if d else src for d in INCLUDES)


def library_sources(src):
    """Relative paths of the .c/.cpp files built into the library (sorted)."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(root, f), src).replace(os.sep, "/")
            if f.endswith((".c", ".cpp", ".cc")) and not rel.startswith(SKIPPED):
                found.append(rel)
    return found


def build_key(src, target):
    """sha256 of every file of ``src`` (path and content), the compilers' versions and the flags."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            h.update(os.path.relpath(path, src).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    for tool in (target.cc, target.cxx):
        h.update(subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.encode())
    h.update(repr((target.flags, COMMON_FLAGS, CXX_FLAGS, C_FLAGS, SKIPPED, INCLUDES)).encode())
    return h.hexdigest()


def compile_command(target, source, obj, includes):
    """The compiler command line for one source file of the library or of a sketch."""
    is_c = source.endswith(".c")
    tool, lang = (target.cc, C_FLAGS) if is_c else (target.cxx, CXX_FLAGS)
    return [tool, *target.flags, *COMMON_FLAGS, *lang, "-w", *(f"-I{d}" for d in includes), "-c", source, "-o", obj]


def compile_all(commands, jobs):
    """Runs the compile commands, ``jobs`` at a time; TinyVisionError with the first failure's message."""
    def run(cmd):
        return cmd, subprocess.run(cmd, capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for cmd, done in pool.map(run, commands):
            if done.returncode != 0:
                raise TinyVisionError(f"{os.path.basename(cmd[0])} failed on {cmd[-3]}: "
                                      f"{done.stderr.strip()[-1500:]}")


def build_library(lib_dir=None, target="host", jobs=None, verbose=False):
    """A ``Library``: the cached libtflm.a of ``lib_dir`` for ``target``, built first when not cached.

    lib_dir: the Arduino library folder (default ``default_lib_dir()``); jobs: parallel compilers
    (default: the CPU count). Raises TinyVisionError for a missing library or toolchain, or a compile error.
    """
    lib_dir = os.path.abspath(os.fspath(lib_dir or default_lib_dir()))
    target = get_target(target)
    src = source_dir(lib_dir)
    includes = include_dirs(lib_dir)
    key = build_key(src, target)
    folder = os.path.join(cache_dir(), "tflm-lib", f"{target.name}-{key[:24]}")
    archive = os.path.join(folder, "libtflm.a")
    if os.path.isfile(archive):
        return Library(archive, includes, target, True, 0.0)
    sources = library_sources(src)
    if verbose:
        print(f"building {LIB_NAME} ({len(sources)} files) for {target.name} into {folder} (once)", flush=True)
    start = time.monotonic()
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=f".{target.name}.tmp-")
    try:
        objects = [os.path.join(tmp, f"{i:03d}_{os.path.basename(s)}.o") for i, s in enumerate(sources)]
        compile_all([compile_command(target, os.path.join(src, s), o, includes) for s, o in zip(sources, objects)],
                    jobs or os.cpu_count() or 1)
        done = subprocess.run([target.ar, "rcs", os.path.join(tmp, "libtflm.a"), *objects], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise TinyVisionError(f"{target.ar} failed: {done.stderr.strip()}")
        for o in objects:
            os.remove(o)
        try:
            os.rename(tmp, folder)
        except OSError:  # built meanwhile by another process: keep theirs
            if not os.path.isfile(archive):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Library(archive, includes, target, False, time.monotonic() - start)
