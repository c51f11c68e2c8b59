"""Flag parsing, help and error handling shared by every sub-command.

A command's ``run()`` raises TinyVisionError for anything the user can fix;
this turns it (and any unexpected failure) into one line on stderr and a
non-zero exit, never a traceback. TensorFlow is imported before ``run()`` unless the
module's ``needs_tensorflow()`` says the parsed flags do without it.
"""
import sys

from absl import flags

from tinyvision.errors import TinyVisionError

FLAGS = flags.FLAGS


def run_command(module, argv):
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(f"usage: {argv[0]} [--flags]\n\n{(module.__doc__ or '').strip()}\n")
        print(FLAGS.module_help(module))
        return 0
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        print(f"{argv[0]}: {e}", file=sys.stderr)
        return 2
    if len(rest) > 1:
        print(f"{argv[0]}: unexpected arguments {' '.join(rest[1:])} (see --help)", file=sys.stderr)
        return 2
    try:
        if getattr(module, "needs_tensorflow", lambda: True)():
            from tinyvision.native_log import import_tensorflow

            import_tensorflow()  # importing it here, once, keeps its start-up lines quiet
        module.run()
    except TinyVisionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the promise is one line, whatever went wrong
        print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
