"""seed003: the network of "Designing Extremely Memory-Efficient CNNs for On-device Vision
Tasks" (Lee, Park, Lee 2024): input segmentation -> patch tunnels of reordered
bottlenecks -> merge -> classifier. The stage tables below are this project's
choice (sized for a 256 KB SRAM / 1 MB flash MCU), not the paper's exact ones.
"""
import tinyvision  # noqa: F401
import tensorflow as tf

from tinyvision.errors import TinyVisionError
from tinyvision.layers import InputSegmentation, PatchTunnel

layers = tf.keras.layers

# Per tunnel: stem 3x3/2 then (expansion t, channels c, repeats n, first stride s,
# depthwise kernel k, groups G) stages; G applies to every block of the stage.
IMAGENET_STAGES = (
    (1, 8, 1, 1, 3, 1),
    (6, 16, 2, 2, 3, 2),
    (6, 24, 3, 2, 3, 1),
    (6, 40, 3, 2, 3, 1),
    (6, 56, 2, 1, 3, 1),
    (6, 80, 2, 2, 3, 1),
)
VWW_STAGES = (
    (1, 8, 1, 1, 3, 1),
    (6, 16, 2, 2, 3, 2),
    (6, 24, 2, 2, 3, 1),
    (6, 32, 2, 2, 3, 1),
    (6, 48, 2, 1, 3, 1),
    (6, 64, 1, 2, 3, 1),
)

CONFIGS = {
    "imagenet": dict(resolution=224, classes=1000, grid=(4, 4), patch_size=64, overlap=None,
                     center_patch=True, center_size=None, stem_filters=16, stages=IMAGENET_STAGES,
                     last_filters=None, head_units=192, shared=True),
    "vww": dict(resolution=128, classes=2, grid=(2, 2), patch_size=None, overlap=16,
                center_patch=True, center_size=None, stem_filters=16, stages=VWW_STAGES,
                last_filters=None, head_units=None, shared=True),
}


def blocks_from_stages(stages):
    """(t, c, n, s, k, G) rows -> the ReorderedBottleneck argument dicts PatchTunnel takes."""
    blocks = []
    for expansion, filters, repeats, stride, kernel, groups in stages:
        blocks += [dict(filters=filters, expansion=expansion, stride=stride if i == 0 else 1,
                        kernel_size=kernel, groups=groups) for i in range(repeats)]
    return blocks


def seed003(config="imagenet", resolution=None, classes=None, grid=None, patch_size=None,
            overlap=None, center_patch=None, center_size=None, stem_filters=None, stages=None,
            last_filters=None, head_units=None, shared=None, classifier_activation=None,
            channels=3, name=None):
    """Build seed003: ``(B, R, R, channels)`` image -> ``(B, classes)`` logits.

    Graph: InputSegmentation (grid + centre patch) -> PatchTunnel (per patch: stem
    conv 3x3/2 + BN + ReLU6, ReorderedBottleneck stages with their own downsampling,
    GAP) -> concatenation ``(B, n_patches * C)`` (a tree of concatenations of <= 10
    inputs, TFLM's limit: 9 + 8 then 2 for 17 tunnels) -> [Dense(head_units) + ReLU6] ->
    Dense(classes). Every argument left None takes the ``config`` default
    (``CONFIGS``); passing ``overlap`` without ``patch_size`` derives the patch size
    from the overlap.

    config="imagenet": 224x224x3, 1000 classes, 4x4 grid of 64-px patches (starts 0,
    53, 107, 160: ~11 px overlap) + a 64-px centre patch at (80, 80) = 17 tunnels,
    one shared set of tunnel weights, C = 80 per tunnel, head 17*80 = 1360 -> 192 ->
    1000 (int8 weights ~740 KB, of which the tunnel ~300 KB: fits 1 MB flash).
    Per-tunnel int8 activation bytes, group-wise, 16-B aligned (``models.tunnel_peak``;
    a tensor is freed after its last reader):
      stem 3x3/2:            patch 64*64*3 = 12288 + out 32*32*16 = 16384        = 28672
      block 0 (t1, 16->8):   dw in 16384 + dw out 32*32*16 = 16384                = 32768
      block 1 (t6, 8->16, s2, G=2: 24 of E=48 channels per group), group 0 depthwise:
                             x 32*32*8 = 8192 + expanded 32*32*24 = 24576
                             + dw out 16*16*24 = 6144                             = 38912
      block 2 (16x16, G=2):  x 4096 + sum 4096 + 16*16*48 + 16*16*48             = 32768
      block 3 (t6, 16->24, s2, G=1): expanded 16*16*96 + dw out 8*8*96            = 30720
      later blocks (8x8 and smaller) < 20 KB
    plus the pooled 80-byte vectors of the tunnels already run (16 * 80 = 1280 for the
    last): peak 38912 + 1280 = 40192 B (39.3 KB) <= 60 KB, under the paper's 63 KB.
    Ungrouped, block 1 would need 49152 + 12288 = 61440 B (+1280). Not counted: the
    full 150 KB image, which the design assumes is fetched patch by patch.
    Deployed as a tunnel bundle (``tinyvision convert --patches=tunnels``), TFLM's arena
    holds one tunnel at a time plus the 1360-B stage buffer. Flash: the tunnels share
    one model only if they share activation ranges too, as after QAT
    (``quantize_model(flatten(model))``: one quantizer per shared layer); post-training
    calibration ranges each call separately, so 17 near-identical tunnel models.

    config="vww": person / no person (2 classes), resolution 128 (96-144 fine), 2x2 grid
    with >= 16 px overlap (72-px patches at 128) + centre patch = 5 tunnels, C = 64,
    head Dense(2) on 320 features (~140 KB flash). Peak at 128: block 1 (t6, 8->16, s2,
    G=2) group 0 depthwise, x 36*36*8 = 10368 + 36*36*24 = 31104 + 18*18*24 = 7776,
    + 4 pooled vectors (256) = 49504 B (48.3 KB).
    """
    if config not in CONFIGS:
        raise TinyVisionError(f"unknown seed003 config {config!r}; choose from {sorted(CONFIGS)}")
    given = dict(resolution=resolution, classes=classes, grid=grid, patch_size=patch_size,
                 overlap=overlap, center_patch=center_patch, center_size=center_size,
                 stem_filters=stem_filters, stages=stages, last_filters=last_filters,
                 head_units=head_units, shared=shared)
    cfg = dict(CONFIGS[config])
    if overlap is not None and patch_size is None:
        cfg["patch_size"] = None
    cfg.update({k: v for k, v in given.items() if v is not None})

    size = cfg["resolution"]
    inputs = layers.Input((size, size, channels))
    patches = InputSegmentation(cfg["grid"], cfg["patch_size"], cfg["overlap"] or 0,
                                cfg["center_patch"], cfg["center_size"],
                                name="segmentation")(inputs)
    x = PatchTunnel(blocks_from_stages(cfg["stages"]), stem_filters=cfg["stem_filters"],
                    last_filters=cfg["last_filters"], shared=cfg["shared"], name="tunnel")(patches)
    if cfg["head_units"]:
        x = layers.Dense(cfg["head_units"], name="head")(x)
        x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.Dense(cfg["classes"], activation=classifier_activation, name="predictions")(x)
    return tf.keras.Model(inputs, x, name=name or f"seed003_{config}_{size}")
