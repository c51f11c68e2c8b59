"""Wall time of the CLI's quick paths (no TensorFlow) and of a command that loads TensorFlow.

  python benchmarks/cli_startup.py
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = [["--help"], ["--version"], ["build", "--help"], ["build", "--list"], ["analyze", "--model=missing.tflite"]]


def main():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for args in COMMANDS:
        start = time.time()
        subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, env=env)
        print(f"tinyvision {' '.join(args):<32} {time.time() - start:6.2f} s")


if __name__ == "__main__":
    main()
