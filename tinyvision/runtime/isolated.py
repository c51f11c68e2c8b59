"""Run a Python function in a fresh subprocess, so a native crash cannot take the caller down.

TFLM calls ``abort()`` on some inputs (e.g. quantization parameters its kernels
cannot represent) and a corrupt flatbuffer can segfault it; both kill the whole
process. ``call("package.module:function", *args)`` runs the function in a new
``python`` that imports only that module (not TensorFlow, unless the module
does), passes arguments and the result through pickled temp files, and turns
every way the child can fail into one ``TinyVisionError`` line:

* the child raised ``TinyVisionError``  -> the same error, re-raised as is;
* it raised anything else               -> "<who> failed while <task>: <Type>: <message>";
* it died from a signal                 -> "<who> aborted (SIGABRT) while <task>: <last output line>";
* it ran past ``timeout`` seconds       -> "<who> timed out after N s while <task>".

One ``call`` is one process start (~0.1 s plus the module's imports), so a job
that needs several interpreters (a patch runner, a search over arena sizes)
should be one function run by one ``call``.

The child's stdout and stderr go to temp files (TFLM prints through C stdio and
would otherwise litter the terminal); functions that need that text capture it
with ``captured_c_output``, whose file the parent also reads when the child dies
mid-capture, so a native message printed just before an abort is not lost.
"""
import contextlib
import ctypes
import os
import pickle
import signal
import subprocess
import sys
import tempfile

from tinyvision.errors import TinyVisionError

# Read by the child: prepend the parent's sys.path (so the target module imports the same
# way as in the parent), then hand over to _child_main. Kept tiny: it runs before any import.
_BOOTSTRAP = (
    "import pickle, sys\n"
    "f = open(sys.argv[1], 'rb')\n"
    "sys.path[:0] = [p for p in pickle.load(f) if p not in sys.path]\n"
    "from tinyvision.runtime.isolated import _child_main\n"
    "_child_main(f, sys.argv[2])\n"
)

_OK, _RAISED_TV, _RAISED_OTHER = "ok", "tinyvision-error", "error"
_CAPTURE_ENV = "TINYVISION_ISOLATED_CAPTURE"


def call(target, *args, timeout=None, task=None, who="subprocess", **kwargs):
    """Run ``target(*args, **kwargs)`` in a fresh Python process and return its result.

    target: "package.module:function" (a module-level function the child can import).
    args/kwargs: picklable values (numpy arrays, bytes, ...); the result must be picklable too.
    timeout: seconds before the child is killed (None = no limit).
    task, who: words for error messages, e.g. who="TFLM", task="allocating model.tflite".
    ``timeout``, ``task`` and ``who`` are consumed here and not forwarded.
    """
    module, sep, function = target.partition(":")
    if not sep or not module or not function:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    task = task or f"running {target}"
    with tempfile.TemporaryDirectory(prefix="tinyvision-isolated-") as tmp:
        request = os.path.join(tmp, "request.pkl")
        result = os.path.join(tmp, "result.pkl")
        out_path = os.path.join(tmp, "stdout.txt")
        err_path = os.path.join(tmp, "stderr.txt")
        capture_path = os.path.join(tmp, "captured.txt")
        with open(request, "wb") as f:
            pickle.dump([p for p in sys.path if p], f)
            pickle.dump((module, function, args, kwargs), f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, request, result],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_child_env(capture_path),
            )
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise TinyVisionError(f"{who} timed out after {timeout:g} s while {task}") from None
            except BaseException:  # KeyboardInterrupt: do not leave the child running
                proc.kill()
                proc.wait()
                raise
        if os.path.exists(result) and os.path.getsize(result) > 0:
            with open(result, "rb") as f:
                status, payload = pickle.load(f)
            if status == _OK:
                return payload
            if status == _RAISED_TV:
                raise payload
            raise TinyVisionError(f"{who} failed while {task}: {payload}")
        last = _last_line(capture_path, err_path, out_path)
        tail = f": {last}" if last else ""
        if returncode < 0:
            name = _signal_name(-returncode)
            verb = "aborted" if -returncode == signal.SIGABRT else "crashed"
            raise TinyVisionError(f"{who} {verb} ({name}) while {task}{tail}")
        raise TinyVisionError(f"{who} exited with status {returncode} while {task}{tail}")


def _child_env(capture_path):
    env = dict(os.environ)
    env[_CAPTURE_ENV] = capture_path
    # The child must find tinyvision itself even when the parent was started from another folder.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("PYTHONFAULTHANDLER", None)  # its traceback dump would hide the native message
    return env


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(*paths, limit=400):
    """The last non-empty line of the most recently written of ``paths`` that has one, or ''."""
    found = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace")
            written = os.stat(path).st_mtime_ns
        except OSError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            found.append((written, lines[-1][:limit]))
    return max(found)[1] if found else ""


class CapturedOutput:
    """What the process wrote while ``captured_c_output`` was active (``text`` is set on exit)."""

    text = ""


@contextlib.contextmanager
def captured_c_output():
    """Capture what the process writes to fd 1 and 2, C stdio included; yields a ``CapturedOutput``.

    For native code (TFLM's MicroPrintf) that Python's own redirection cannot see. Meant
    for a child of ``call``: there the capture goes to a file the parent reads if the
    child dies, and while active the process's own prints are captured too.
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    libc.fflush(None)
    shared = os.environ.get(_CAPTURE_ENV)
    sink = open(shared, "a+b") if shared else tempfile.TemporaryFile()
    sink.seek(0, os.SEEK_END)
    start = sink.tell()
    saved = [os.dup(1), os.dup(2)]
    captured = CapturedOutput()
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield captured
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        libc.fflush(None)  # C stdio buffers what it writes to a file
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sink.seek(start)
        captured.text = sink.read().decode("utf-8", "replace")
        sink.truncate(start)  # the shared file keeps only a capture the child died in
        sink.close()


def _child_main(request_file, result_path):
    """Child side: load the request, run it, pickle (status, payload) to ``result_path``."""
    import importlib
    import traceback

    with request_file:
        module, function, args, kwargs = pickle.load(request_file)
    try:
        fn = getattr(importlib.import_module(module), function)
        outcome = (_OK, fn(*args, **kwargs))
    except TinyVisionError as e:
        outcome = (_RAISED_TV, e)
    except BaseException as e:  # noqa: BLE001  report anything (SystemExit included) as one line
        traceback.print_exc()
        message = str(e).strip().splitlines()
        outcome = (_RAISED_OTHER, f"{type(e).__name__}: {message[0] if message else ''}".rstrip(": "))
    try:
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # an unpicklable result or exception
        data = pickle.dumps((_RAISED_OTHER, f"result could not be pickled: {type(e).__name__}: {e}"))
    with open(result_path, "wb") as f:
        f.write(data)
    sys.stdout.flush()
    sys.stderr.flush()
