"""Run a bundle's Arduino sketch on an emulated Cortex-M4F before flashing it.

Exports the sketch (as `export --arduino` does), builds it with arm-none-eabi-g++ against the
board's TFLM library (the Arduino library folder given by --arduino_lib; built once and cached
under $TINYVISION_CACHE or ~/.cache/tinyvision) and runs it under qemu-system-arm (mps2-an386
with the board's memory, -icount): prints the class, the scores next to the host's, the arena bytes
TFLM touched, and the instructions per stage with the latency they imply at the board's 64 MHz.
A .tflite runs whole; `--board=mps2-an386` gives the emulator 4 MB of RAM and code memory, for
measuring a model too large for the Nano (an unsplit baseline) on the same CPU and library.

  tinyvision emulate --model=out/bundle [--arduino_lib=~/Arduino/libraries/Chirale_TensorFlowLite]
                     [--image=photo.jpg]
  tinyvision emulate --model=out/model.tflite --board=mps2-an386
"""
from absl import flags

flags.DEFINE_string("model", None, "bundle folder (tinyvision convert --patches=...) or a .tflite (run whole)")
flags.DEFINE_string("board", "nano33ble", "board profile whose memory the emulator takes (mps2-an386: 4 MB)")
flags.DEFINE_string("arduino_lib", None, "the board's TFLM library folder "
                    "(default: ~/Arduino/libraries/Chirale_TensorFlowLite)")
flags.DEFINE_string("image", None, "image file to classify (default: a sample of the built-in dataset)")
flags.DEFINE_bool("every_stage", False, "list every stage's check and instructions (default: a summary for "
                  "bundles of more than 8 stages)")
FLAGS = flags.FLAGS
LISTED_STAGES = 8  # a bundle with more stages gets a summary of them
LISTED_SCORES = 16  # more scores are only compared, not printed


def run():
    from tinyvision.errors import TinyVisionError
    from tinyvision.runtime.board import run_bundle

    if not FLAGS.model:
        raise TinyVisionError("--model is required")
    from converters.export.boards import get_board

    board = get_board(FLAGS.board)
    (result,) = run_bundle(FLAGS.model, ("cortex-m4",), FLAGS.arduino_lib, image=FLAGS.image, verbose=True,
                           board=board).values()
    for line in report(result, board, every_stage=FLAGS.every_stage):
        print(line)


def report(result, board, every_stage=False):
    """The lines `emulate` prints for an ``Emulation`` of a sketch exported for ``board`` (a ``BoardProfile``);
    a bundle of more than ``LISTED_STAGES`` stages gets a summary of its stages unless ``every_stage``."""
    from tinyvision.runtime.board import BOARD_HZ

    run = result.run
    arena = run.arena
    counts = run.instructions()
    host_best = int(result.host_scores.argmax())
    sketch_line = next(line for line in run.lines if line.startswith(("class=", "detections=", "outputs=")))
    lines = [f"emulated Cortex-M4F (qemu mps2-an386, {board.ram_bytes // 1024:,} KB RAM as {board.name}), the board's "
             f"TFLM library: {sketch_line}"]
    same = "(equal)" if result.score_diff == 0 else f"(differ by up to {result.score_diff})"
    if sketch_line.startswith("outputs="):  # several output heads: the sketch prints each one's maximum
        lines += [f"  {line}" for line in run.lines if line.startswith("output=")]
        lines.append(f"  output   {run.scores.size} values in {len(run.outputs)} outputs on the emulator and the "
                     f"host {same}")
    elif sketch_line.startswith("detections="):  # a centroid or box detector: its output is too long to print
        lines += [f"  {line}" for line in run.lines if line.startswith("detection ")]
        lines.append(f"  output   {run.scores.size} values on the emulator and the host {same}")
    else:
        lines.append(f"  class    {run.predicted} on the emulator, {host_best} on the host")
        if run.scores.size <= LISTED_SCORES:
            lines.append(f"  scores   emulator {run.scores.tolist()}  host {result.host_scores.tolist()}  {same}")
        else:  # a thousand classes would fill the screen
            lines.append(f"  scores   {run.scores.size} values on the emulator and the host {same}")
    lines += [f"  known    {line}" for line in result.board_differences if result.score_diff]
    listed = every_stage or len(result.stage_mismatches) <= LISTED_STAGES
    lines += ["  stages   " + _stage_checks(result.stage_mismatches, listed),
              f"  arena    {arena['used']:,} of {arena['size']:,} B touched (shared {arena['shared']:,}, persistent "
              f"{arena['persistent']:,}); interpreter creation wrote {arena['creation']:,} B"]
    per_stage = _stage_instructions(counts, listed)
    lines.append(f"  instructions per inference {counts['inference'] / 1e6:.2f} M ({per_stage}; interpreter "
                 f"creation {counts['creation'] / 1e6:.1f} M of them); setup {counts['setup'] / 1e6:.2f} M")
    lines.append(f"  latency  {counts['inference'] / BOARD_HZ * 1e3:.0f} ms at 64 MHz if one instruction took one "
                 f"cycle (the Cortex-M4 takes more for loads, multiplies and branches: a lower bound)")
    return lines


def _stage_checks(mismatches, listed):
    """'0: bit-exact, 1: 3 values differ, ...', or for a summary: how many stages are bit-exact and which are not."""
    if not mismatches:
        return "none (a whole model)"
    checks = [(k, "bit-exact" if bad == 0 else f"{bad} values differ") for k, bad in enumerate(mismatches)]
    if listed:
        return ", ".join(f"{k}: {check}" for k, check in checks)
    differ = [f"{k}: {check}" for k, check in checks if check != "bit-exact"]
    exact = len(checks) - len(differ)
    return (f"all {exact} bit-exact" if not differ else f"{exact} of {len(checks)} bit-exact; " + ", ".join(differ))


def _stage_instructions(counts, listed):
    """Instructions per stage and tail, or for a summary: all stages together and the three that take most."""
    stages = {name: n for name, n in counts.items() if name.startswith("stage")}
    tail = f"tail {counts['tail'] / 1e6:.2f} M" if "tail" in counts else None
    if listed:
        parts = [f"{name} {n / 1e6:.2f} M" for name, n in stages.items()]
    else:
        largest = sorted(stages.items(), key=lambda item: -item[1])[:3]
        parts = [f"{len(stages)} stages {sum(stages.values()) / 1e6:.2f} M, the largest "
                 + ", ".join(f"{name} {n / 1e6:.2f} M" for name, n in largest)]
    return ", ".join(parts + ([tail] if tail else []))
