"""Check an offline-planned model on the real TFLM against the same model without the plan.

One subprocess (``tinyvision.runtime.isolated``) runs both models on TFLM: the
arena heads TFLM reports and the outputs on the same inputs come back, so a
caller can assert that TFLM honoured the plan (its head equals the plan's
size) and that the plan corrupted nothing (outputs bit-exact).
"""
import dataclasses

import numpy as np

from tinyvision.runtime import isolated


@dataclasses.dataclass(frozen=True)
class TflmComparison:
    """heads in bytes (TFLM's ``Arena allocation head``), outputs as lists of arrays."""

    planned_head: int
    unplanned_head: int
    planned_outputs: list
    unplanned_outputs: list

    @property
    def bit_exact(self):
        return len(self.planned_outputs) == len(self.unplanned_outputs) and all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(self.planned_outputs, self.unplanned_outputs)
        )


def compare_on_tflm(planned_bytes, unplanned_bytes, inputs, name="model", timeout=120):
    """Run both models once on TFLM with ``inputs`` (one array per model input); returns a ``TflmComparison``."""
    return isolated.call(
        "converters.planning.verify:compare_job", bytes(planned_bytes), bytes(unplanned_bytes),
        [np.asarray(x) for x in inputs], name, timeout=timeout, task=f"running {name} with its offline plan",
        who="TFLM",
    )


def compare_job(planned_bytes, unplanned_bytes, inputs, name):
    from tinyvision.runtime import tflm

    results = []
    for data, label in ((planned_bytes, f"{name} (planned)"), (unplanned_bytes, name)):
        interpreter = tflm.open_interpreter(data, None, label)
        outputs = tflm.invoke(interpreter, inputs, label)
        results.append((tflm.arena_report(interpreter).head_bytes, outputs))
    (planned_head, planned_outputs), (unplanned_head, unplanned_outputs) = results
    return TflmComparison(planned_head, unplanned_head, planned_outputs, unplanned_outputs)
