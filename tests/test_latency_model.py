"""The Cortex-M4F instruction model (tinyvision.analysis.latency) against the emulator, and the search's latency limit.

The profiling harness (tinyvision.runtime.board, profile=True) runs TFLM's person-detection model and a bundle
of it on the board's TFLM library (Chirale_TensorFlowLite, CMSIS-NN) under qemu-system-arm -icount: every
operator of every model must be counted, and the shipped estimate must follow what the emulator counts. The
search test needs no emulator. Skipped without ../shared (the real model) or, for the emulator tests, without
arm-none-eabi-g++ and qemu-system-arm.
"""
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
PERSON_DETECT = os.path.join(SHARED, "models", "person_detect.tflite")
LIB_DIR = os.path.join(SHARED, "third_party", "Chirale_TensorFlowLite")
HAS_M4 = all(shutil.which(t) for t in ("arm-none-eabi-g++", "qemu-system-arm")) and os.path.isdir(LIB_DIR)

pytestmark = pytest.mark.skipif(not os.path.isfile(PERSON_DETECT), reason="../shared/models is absent")
needs_emulator = pytest.mark.skipif(not HAS_M4, reason="needs arm-none-eabi-g++, qemu-system-arm and the board's "
                                                       "TFLM library at ../shared/third_party")


def person_detect():
    with open(PERSON_DETECT, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def profiled_bundle(tmp_path_factory):
    """(bundle, SketchRun): person_detect in 3 stages and 2 segments, profiled on the emulated Cortex-M4F."""
    from converters.optimize import optimize_tflite
    from converters.patching import read_bundle, split_stages, write_bundle
    from converters.patching.bundle import finalize
    from tinyvision.runtime.board import run_bundle

    optimized, _ = optimize_tflite(person_detect(), "person_detect.tflite")
    folder = str(tmp_path_factory.mktemp("latency") / "bundle")
    chain = [(4, 3), (8, 4), (12, 2), (20, 1), (26, 1)]
    write_bundle(finalize(split_stages(optimized, chain, "person_detect.tflite")), folder)
    (result,) = run_bundle(folder, ("cortex-m4",), LIB_DIR, profile=True).values()
    assert result.bit_exact
    return read_bundle(folder), result.run


@needs_emulator
def test_the_profile_counts_every_operator_of_every_model(profiled_bundle):
    """Each model is profiled alone with each of its operators, in its order; the tail's operators add up to
    what the inference spent in the tail (the same Invoke, less the runtime around it)."""
    bundle, run = profiled_bundle
    assert sorted(run.profile) == list(range(len(bundle.models)))
    for m, profile in run.profile.items():
        assert [name for name, _ in profile.ops] == [op.opcode for op in bundle.models[m].graph().ops]
        assert profile.create > 0 and all(spent > 0 for _, spent in profile.ops)
    tail_ops = sum(spent for _, spent in run.profile[bundle.tail].ops)
    tail_create = run.profile[bundle.tail].create
    assert abs(run.instructions()["tail"] - tail_create - tail_ops) <= 0.03 * tail_ops


@needs_emulator
def test_the_estimate_follows_the_emulator(profiled_bundle):
    """bundle_instructions (the shipped coefficients) within 10% of the emulator's count per inference and
    within 20% per stage, the tail and interpreter creation."""
    from tinyvision.analysis.latency import bundle_instructions

    bundle, run = profiled_bundle
    measured, estimate = run.instructions(), bundle_instructions(bundle)
    assert set(estimate) <= set(measured)
    assert abs(estimate["inference"] / measured["inference"] - 1) <= 0.10, (estimate, measured)
    for part in [k for k in estimate if k.startswith("stage")] + ["tail", "creation"]:
        assert abs(estimate[part] / measured[part] - 1) <= 0.20, (part, estimate[part], measured[part])


def test_the_search_keeps_within_the_latency_limit():
    """Every chain the search ranks is within --max_latency_overhead (estimated); the limit bites: without it
    the least-SRAM chain is slower than the limit. Re-creating interpreters counts: a chain's segments cost
    instructions though they add no MAC."""
    from converters.optimize import optimize_tflite
    from converters.patching.search import search

    optimized, _ = optimize_tflite(person_detect(), "person_detect.tflite")
    free = search(optimized, 0.15, "person_detect.tflite", max_stages=2)
    limited = search(optimized, 0.15, "person_detect.tflite", max_stages=2, max_latency_overhead=0.2)
    assert free.ranked[0].latency_overhead > 0.2
    assert limited.ranked and all(c.latency_overhead <= 0.2 for c in limited.ranked)
    assert limited.ranked[0].sram >= free.ranked[0].sram
    segmented = [c for c in free.candidates if c.stages[-1][1] == 1]
    assert segmented and all(c.latency_overhead > 0 for c in segmented)
