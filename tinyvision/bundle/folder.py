"""A bundle folder on disk: ``plan.json`` and one .tflite per model, written atomically, read and verified."""
import json
import os
import shutil
import tempfile

from tinyvision.bundle.derive import check_derived
from tinyvision.bundle.document import Bundle, validate
from tinyvision.bundle.schema import FORMAT, check_plan_fields
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import read_bytes, replace_folder

PLAN_FILE = "plan.json"
# plan.json of a large bundle is a few hundred kB; anything far larger is not a plan.
MAX_PLAN_BYTES = 16 << 20


def read_plan(folder):
    """The parsed ``plan.json`` of ``folder`` with every field of its type and range (``schema.PLAN``)."""
    path = os.path.join(os.fspath(folder), PLAN_FILE)
    text = read_bytes(path)
    if len(text) > MAX_PLAN_BYTES:
        raise TinyVisionError(f"{path} is {len(text):,} B, too large for a bundle plan")
    try:
        plan = json.loads(text)
    except RecursionError:
        raise TinyVisionError(f"{path} nests too deeply to be a bundle plan") from None
    except ValueError as e:
        raise TinyVisionError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise TinyVisionError(f"{path} is not a {FORMAT} plan")
    try:
        check_plan_fields(plan)
    except TinyVisionError as e:
        raise TinyVisionError(f"{path}: {e}") from None
    return plan


def read_bundle(folder):
    """Load a bundle folder, check the plan against itself and re-derive every figure its model files
    determine (TFLM measures them in one subprocess); TinyVisionError naming the first disagreement."""
    from tinyvision.fileio import read_tflite_bytes

    folder = os.fspath(folder)
    plan = read_plan(folder)
    files = [m["file"] for m in plan["models"]]
    for i, (name, entry) in enumerate(zip(files, plan["models"])):
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise TinyVisionError(f"{folder}: models[{i}].file {name!r} is not a file inside the bundle")
        if name != f"{entry['name']}.tflite":
            raise TinyVisionError(f"{folder}: models[{i}] {entry['name']!r} must be stored as "
                                  f"{entry['name']}.tflite, not {name}")
    bundle = Bundle.from_plan(plan, [read_tflite_bytes(os.path.join(folder, name)) for name in files])
    validate(bundle, where=folder)
    check_derived(bundle, where=folder)
    return bundle


def write_folder(bundle, folder):
    """Write a validated ``bundle`` as ``folder`` atomically: into a temporary folder next to it, then renamed
    into place. An existing bundle folder is replaced, any other existing path is refused. Returns the path."""
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    if os.path.exists(folder) and not os.path.isfile(os.path.join(folder, PLAN_FILE)):
        if not os.path.isdir(folder) or os.listdir(folder):
            raise TinyVisionError(f"{folder} exists and is not a bundle: refusing to replace it")
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.tmp-")
    except OSError as e:
        raise TinyVisionError(f"cannot write {folder}: {e.strerror or e}") from None
    try:
        for m in bundle.models:
            with open(os.path.join(tmp, m.file), "wb") as f:
                f.write(m.data)
        with open(os.path.join(tmp, PLAN_FILE), "w", encoding="utf-8") as f:
            json.dump(bundle.plan(), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o755)
        replace_folder(tmp, folder)
    except OSError as e:
        raise TinyVisionError(f"cannot write {folder}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
