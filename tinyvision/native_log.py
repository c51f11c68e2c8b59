"""Import TensorFlow without its native start-up chatter on stderr.

TensorFlow's C++ libraries log INFO lines (oneDNN, CUDA probing) through absl
before absl logging is initialised, and absl then writes everything to stderr,
ignoring ``TF_CPP_MIN_LOG_LEVEL``. A command-line user should see only our
output and real errors, so the import runs with file descriptor 2 captured and
everything but those start-up lines is written back.
"""
import os
import re
import sys
import tempfile

STARTUP_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] )"
)


def import_tensorflow():
    """``import tensorflow`` with absl's INFO/WARNING start-up lines dropped from stderr; returns the module."""
    import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().splitlines(keepends=True):
                if not STARTUP_NOISE.match(line):
                    os.write(2, line)
    return tensorflow
