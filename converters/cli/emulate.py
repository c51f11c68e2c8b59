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
FLAGS = flags.FLAGS


def run():
    from tinyvision.errors import TinyVisionError
    from tinyvision.runtime.board import run_bundle

    if not FLAGS.model:
        raise TinyVisionError("--model is required")
    from converters.export.boards import get_board

    board = get_board(FLAGS.board)
    (result,) = run_bundle(FLAGS.model, ("cortex-m4",), FLAGS.arduino_lib, image=FLAGS.image, verbose=True,
                           board=board).values()
    for line in report(result, board):
        print(line)


def report(result, board):
    """The lines `emulate` prints for an ``Emulation`` of a sketch exported for ``board`` (a ``BoardProfile``)."""
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
        lines += [f"  class    {run.predicted} on the emulator, {host_best} on the host",
                  f"  scores   emulator {run.scores.tolist()}  host {result.host_scores.tolist()}  {same}"]
    lines += [f"  known    {line}" for line in result.board_differences if result.score_diff]
    lines += ["  stages   " + (", ".join(f"{k}: {'bit-exact' if bad == 0 else f'{bad} values differ'}"
                                      for k, bad in enumerate(result.stage_mismatches)) or "none (a whole model)"),
              f"  arena    {arena['used']:,} of {arena['size']:,} B touched (shared {arena['shared']:,}, persistent "
              f"{arena['persistent']:,}); interpreter creation wrote {arena['creation']:,} B"]
    per_stage = ", ".join(f"{name} {n / 1e6:.2f} M" for name, n in counts.items()
                          if name.startswith("stage") or name == "tail")
    lines.append(f"  instructions per inference {counts['inference'] / 1e6:.2f} M ({per_stage}; interpreter "
                 f"creation {counts['creation'] / 1e6:.1f} M of them); setup {counts['setup'] / 1e6:.2f} M")
    lines.append(f"  latency  {counts['inference'] / BOARD_HZ * 1e3:.0f} ms at 64 MHz if one instruction took one "
                 f"cycle (the Cortex-M4 takes more for loads, multiplies and branches: a lower bound)")
    return lines
