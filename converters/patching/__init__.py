"""Patch-based inference (MCUNetV2) as graph rewriting, and the bundle it produces.

- ``split_patch_stage(model, n, grid)``: per-patch models for the first n ops of any int8 CNN + a tail.
- ``split_stages(model, [(n0, grid0), (n1, grid1)])``: a chain of patch stages (each splits the last tail).
- ``split_points(model)`` / ``max_stage_ops(model)`` / ``stage_tensor(model, n)``: where a stage may end.
- ``whole_model(model)``: the unsplit model as a bundle with no patch stage (when no split helps).
- ``split_tunnels(model)``: per-tunnel models + a head for InputSegmentation/PatchTunnel models.
- ``write_bundle`` / ``read_bundle`` / ``validate``: the bundle folder (docs/bundle-format.md; the format
  is ``tinyvision.bundle``). The host runner is ``tinyvision.runtime.patch_runner``.
"""
from converters.patching.bundle import write_bundle
from converters.patching.stage import (
    grid_tiles,
    max_stage_ops,
    split_patch_stage,
    split_points,
    split_stages,
    stage_tensor,
    whole_model,
)
from converters.patching.tunnels import split_tunnels
from tinyvision.bundle import Box, Bundle, BundleModel, Patch, Window, read_bundle, validate

__all__ = ["Box", "Bundle", "BundleModel", "Patch", "Window", "grid_tiles", "max_stage_ops", "read_bundle",
           "split_patch_stage", "split_points", "split_stages", "split_tunnels", "stage_tensor", "validate", "whole_model",
           "write_bundle"]
