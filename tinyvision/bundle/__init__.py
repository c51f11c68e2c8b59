"""The patch bundle format (docs/bundle-format.md), which the converters, the host runtime and the exporters
all read through: ``schema`` (every plan field, its type and range), ``document`` (the bundle in memory and
the plan's own consistency), ``derive`` (every figure the model files determine, re-derived and compared)
and ``folder`` (atomic writing, reading with all of the above)."""
from tinyvision.bundle.derive import check_derived, measure, unplanned_arena, whole_model_arena
from tinyvision.bundle.document import (Box, Bundle, BundleModel, Patch, Window, hwc, output_shapes_entry, quant_dict,
                                        validate)
from tinyvision.bundle.folder import PLAN_FILE, read_bundle, read_plan, write_folder
from tinyvision.bundle.schema import FORMAT, KINDS, check_plan_fields

__all__ = ["FORMAT", "KINDS", "PLAN_FILE", "Box", "Bundle", "BundleModel", "Patch", "Window", "check_derived",
           "check_plan_fields", "hwc", "measure", "output_shapes_entry", "quant_dict", "read_bundle", "read_plan",
           "unplanned_arena", "validate", "whole_model_arena", "write_folder"]
