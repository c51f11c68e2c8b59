"""Model zoo: builders returning plain Keras models made of tinyvision layers.

- mobilenet_v2 / mobilenet_v2_rd: MobileNetV2 as keras.applications builds it, and its
  receptive-field-redistributed (MCUNetV2) variant.
- seed003: input segmentation + patch tunnels + reordered bottlenecks (Lee et al. 2024).
- describe(model): params, MACs, int8 flash estimate (also macs(), flash_bytes());
  receptive_field(model, max_stride).
- tunnel_peak(model): per-tunnel int8 activation peak, group-wise execution.
- centroid_detector: MobileNetV2 cut at stride 8 + CentroidHead (FOMO-style detection).
- box_detector: MobileNetV2 cut at stride 8 or 16 + BoxHead (anchor-based, YOLO-style boxes).
- ZOO / build(name, **overrides): named configurations (``python -m models`` lists them).
"""
from models.box_detector import box_detector
from models.detection import centroid_detector
from models.describe import describe, flash_bytes, macs, receptive_field
from models.memory import tunnel_peak, tunnel_steps
from models.mobilenet_v2 import make_divisible, mobilenet_v2, mobilenet_v2_rd
from models.seed003 import seed003
from models.zoo import TASKS, ZOO, build

__all__ = ["box_detector", "centroid_detector", "mobilenet_v2", "mobilenet_v2_rd", "seed003", "describe", "macs", "flash_bytes",
           "receptive_field", "tunnel_peak", "tunnel_steps", "make_divisible", "ZOO", "TASKS", "build"]
