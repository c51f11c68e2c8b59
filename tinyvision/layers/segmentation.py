"""InputSegmentation: cut an image into a grid of overlapping patches (+ a centre patch)."""
import math

from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import Composite, layers, pair, register


def _starts(length, count, size):
    """``count`` window starts of ``size`` pixels spread evenly over ``length`` pixels.

    The first window starts at 0, the last ends at ``length``; the step is
    (length - size) / (count - 1) rounded per window, so consecutive windows never
    leave a gap when count * size >= length.
    """
    if count == 1:
        return [(length - size) // 2]
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def _overlap(overlap):
    overlap = (overlap, overlap) if isinstance(overlap, int) else tuple(overlap)
    if len(overlap) != 2 or not all(isinstance(v, int) and v >= 0 for v in overlap):
        raise TinyVisionError(f"overlap must be an int >= 0 or a pair of them, got {overlap!r}")
    return overlap


def segment_windows(image_size, grid, patch_size=None, overlap=0, center_patch=False,
                    center_size=None):
    """Patch windows ``[(x, y, w, h), ...]`` for an image of ``image_size = (H, W)``.

    Row-major over the ``grid = (rows, cols)`` windows, then the centre window if
    ``center_patch``. ``patch_size = (h, w)`` defaults to the smallest size whose
    neighbours overlap by at least ``overlap = (oy, ox)`` pixels:
    ``h = ceil((H + (rows - 1) * oy) / rows)``. ``center_size`` defaults to the patch size.
    Raises TinyVisionError when the windows would not fit in or cover the image.
    """
    height, width = pair(image_size, "image_size")
    rows, cols = pair(grid, "grid")
    oy, ox = _overlap(overlap)
    if patch_size is None:
        patch_size = (math.ceil((height + (rows - 1) * oy) / rows),
                      math.ceil((width + (cols - 1) * ox) / cols))
    ph, pw = pair(patch_size, "patch_size")
    if ph > height or pw > width:
        raise TinyVisionError(f"patch {ph}x{pw} is larger than the {height}x{width} image")
    if rows * ph < height or cols * pw < width:
        raise TinyVisionError(
            f"a {rows}x{cols} grid of {ph}x{pw} patches cannot cover a {height}x{width} image")
    windows = [(x, y, pw, ph) for y in _starts(height, rows, ph) for x in _starts(width, cols, pw)]
    if center_patch:
        ch, cw = pair(center_size or (ph, pw), "center_size")
        if ch > height or cw > width:
            raise TinyVisionError(
                f"centre patch {ch}x{cw} is larger than the {height}x{width} image")
        windows.append(((width - cw) // 2, (height - ch) // 2, cw, ch))
    return windows


@register
class InputSegmentation(Composite):
    """Split an image into patches: a ``rows x cols`` grid, plus an optional centre patch.

    Input ``(B, H, W, C)`` with static H and W; output a list of ``rows * cols (+ 1)``
    tensors ``(B, h_i, w_i, C)``, row-major, centre patch last. The windows are evenly
    spread and cover the image (see ``segment_windows``); ``windows`` lists them as
    ``(x, y, w, h)`` once the layer knows the image size, and ``get_config`` records
    them for converters. Each patch is a Cropping2D (STRIDED_SLICE in TFLite).

    Args:
      grid: ``rows`` or ``(rows, cols)``.
      patch_size: ``n`` or ``(h, w)``; default derived from ``overlap``.
      overlap: minimum overlap in pixels between grid neighbours, ``n`` or ``(oy, ox)``,
        used when ``patch_size`` is None.
      center_patch: add a patch centred on the image, overlapping the grid patches.
      center_size: its size, ``n`` or ``(h, w)``; default the grid patch size.
      image_size: ``(H, W)``; optional, taken from the input shape when built.
    """

    def __init__(self, grid=(2, 2), patch_size=None, overlap=0, center_patch=False,
                 center_size=None, image_size=None, **kwargs):
        super().__init__(**kwargs)
        self.grid = pair(grid, "grid")
        self.patch_size = None if patch_size is None else pair(patch_size, "patch_size")
        self.overlap = _overlap(overlap)
        self.center_patch = bool(center_patch)
        self.center_size = None if center_size is None else pair(center_size, "center_size")
        self.image_size = None if image_size is None else pair(image_size, "image_size")
        if self.image_size is not None:
            self._windows()  # fail at construction, not at build, on a bad geometry

    def _windows(self):
        return segment_windows(self.image_size, self.grid, self.patch_size, self.overlap,
                               self.center_patch, self.center_size)

    @property
    def windows(self):
        """``[(x, y, w, h), ...]`` in output order; needs the image size (build or config)."""
        if self.image_size is None:
            raise TinyVisionError(f"{self.name}: windows are unknown until the image size is")
        return self._windows()

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise TinyVisionError(
                f"{self.name} needs a static image size, got {tuple(input_shape)}")
        if self.image_size not in (None, (height, width)):
            raise TinyVisionError(
                f"{self.name} was configured for {self.image_size} images, got {height}x{width}")
        self.image_size = (int(height), int(width))
        self.crops = [
            layers.Cropping2D(((y, height - y - h), (x, width - x - w)), name=f"{self.name}_p{i}")
            for i, (x, y, w, h) in enumerate(self.windows)
        ]
        super().build(input_shape)

    def call(self, inputs):
        return [crop(inputs) for crop in self.crops]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], h, w, input_shape[3]) for _, _, w, h in self.windows]

    def get_config(self):
        config = super().get_config()
        config.update(grid=self.grid, patch_size=self.patch_size, overlap=self.overlap,
                      center_patch=self.center_patch, center_size=self.center_size,
                      image_size=self.image_size)
        if self.image_size is not None:
            # Derived, for converters that read only the config; from_config drops it.
            config["windows"] = [list(w) for w in self.windows]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("windows", None)
        return cls(**config)
