"""Keep TensorFlow's native chatter that says nothing to a tinyvision user off stderr.

TensorFlow's C++ libraries log INFO lines (oneDNN, CUDA probing) through absl
before absl logging is initialised, and absl then writes everything to stderr,
ignoring ``TF_CPP_MIN_LOG_LEVEL``; a CUDA build of TensorFlow on a machine
without a GPU driver logs a ``failed call to cuInit`` ERROR when it first looks
for devices; the TFLite converter's MLIR quantizer prints its options
(``fully_quantize: 0, inference_type: ...``). A command-line user should see
only our output and real errors, so those steps run with file descriptor 2
captured (``filtered_stderr``) and everything but those known lines is written back.
"""
import contextlib
import os
import re
import sys
import tempfile
import warnings

STARTUP_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "
    rb"|E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit)"
)
CONVERTER_NOISE = re.compile(rb"^fully_quantize: \d+, inference_type: \d+, input_inference_type: ")
# tf.lite.Interpreter warns on every construction that it will move to LiteRT; tinyvision only uses it
# as the reference that TFLM is checked against, where the notice means nothing to the user.
_INTERPRETER_NOTICE = r"(?s).*tf\.lite\.Interpreter is deprecated"


@contextlib.contextmanager
def filtered_stderr(noise):
    """Capture file descriptor 2 inside the block; afterwards write back every line ``noise`` does not match."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().splitlines(keepends=True):
                if not noise.match(line):
                    os.write(2, line)


def import_tensorflow():
    """``import tensorflow`` (and its device probe) without the start-up lines on stderr; returns the module."""
    import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with filtered_stderr(STARTUP_NOISE):
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the CUDA probe, which logs cuInit failures
    return tensorflow


def lite_interpreter(**kwargs):
    """``tf.lite.Interpreter(**kwargs)`` without its deprecation notice."""
    tensorflow = import_tensorflow()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INTERPRETER_NOTICE)
        return tensorflow.lite.Interpreter(**kwargs)
