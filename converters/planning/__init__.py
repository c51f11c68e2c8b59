"""Offline arena planning for TFLM: lifetimes, placement, validation, metadata, bundle layout.

Typical use, as the last step before export::

    plan = plan_graph(model.main, scratch=deployment_scratch(model.main))  # host and board kernels
    write_offline_plan(model, plan)      # checks the plan, stores OfflineMemoryAllocation
    data = model.to_bytes()
"""
from converters.planning.bundle import (
    INTERPRETER_MODES,
    BundleLayout,
    allocation_temp_bytes,
    arena_section,
    check_arena,
    creation_floor,
    layout_bundle,
    persistent_span,
    stage_floors,
    temp_reserve,
)
from converters.planning.check import check_plan
from converters.planning.lifetimes import ALIGNMENT, InPlace, Lifetime, align_up, in_place_candidates, tensor_lifetimes
from converters.planning.metadata import (
    METADATA_NAME,
    decode_offline_offsets,
    encode_offline_offsets,
    read_offline_plan,
    write_offline_plan,
)
from converters.planning.packing import Block, Packing, first_conflict, lower_bound, pack
from converters.planning.planner import MemoryPlan, Scratch, deployment_heads, plan_graph, target_scratch
from converters.planning.scratch import cmsis_nn_scratch, deployment_scratch, reference_scratch
from converters.planning.verify import TflmComparison, compare_on_tflm

__all__ = [
    "ALIGNMENT",
    "INTERPRETER_MODES",
    "METADATA_NAME",
    "Block",
    "BundleLayout",
    "InPlace",
    "Lifetime",
    "MemoryPlan",
    "Packing",
    "Scratch",
    "TflmComparison",
    "align_up",
    "allocation_temp_bytes",
    "arena_section",
    "check_arena",
    "check_plan",
    "cmsis_nn_scratch",
    "compare_on_tflm",
    "creation_floor",
    "decode_offline_offsets",
    "deployment_heads",
    "deployment_scratch",
    "encode_offline_offsets",
    "first_conflict",
    "in_place_candidates",
    "layout_bundle",
    "lower_bound",
    "pack",
    "persistent_span",
    "plan_graph",
    "read_offline_plan",
    "reference_scratch",
    "stage_floors",
    "temp_reserve",
    "target_scratch",
    "tensor_lifetimes",
    "write_offline_plan",
]
