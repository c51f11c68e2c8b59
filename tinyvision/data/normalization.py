"""Input normalization shared by every data source, the trainer and the TFLite metadata.

Images are stored and decoded as uint8 RGB (0..255) and fed to models as float32 in
[-1, 1] (the MobileNet convention)::

    x = (pixel - NORMALIZATION_MEAN) / NORMALIZATION_STD      # mean = std = 127.5

The same (mean, std) pair is written into the .tflite metadata (NormalizationOptions),
so an application can turn camera pixels into model input without reading this code.

Models trained elsewhere carry no such metadata; ``input_normalization`` gives the (mean, std)
tinyvision feeds them with (the int8 convention of Edge Impulse, TFLM's examples and MLPerf Tiny),
and ``renormalize`` turns tinyvision's images into that input; ``to_model_channels`` makes them grey
for a model that takes one channel (TFLM's person detection, grayscale Edge Impulse models).
"""
import numpy as np

from tinyvision.errors import TinyVisionError

NORMALIZATION_MEAN = 127.5
NORMALIZATION_STD = 127.5
NORMALIZATION = (NORMALIZATION_MEAN, NORMALIZATION_STD)


def normalize(pixels):
    """uint8 (or 0..255 float) array of any shape -> float32 in [-1, 1]."""
    return ((np.asarray(pixels, np.float32) - NORMALIZATION_MEAN) / NORMALIZATION_STD).astype(np.float32)


def denormalize(images):
    """float images in [-1, 1] -> uint8 pixels (inverse of :func:`normalize`, rounded)."""
    pixels = np.asarray(images, np.float32) * NORMALIZATION_STD + NORMALIZATION_MEAN
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def normalize_tf(pixels):
    """The same mapping as :func:`normalize` for tf.data pipelines (any numeric dtype)."""
    import tensorflow as tf

    return (tf.cast(pixels, tf.float32) - NORMALIZATION_MEAN) / NORMALIZATION_STD


# Grey from RGB as the board's camera path makes it (tflm_app MakeFrameImageSource: (77 R + 150 G + 29 B) >> 8).
GREY_WEIGHTS = (77 / 256, 150 / 256, 29 / 256)


def fed_image_shape(input_shape, name="the model"):
    """The (H, W, 3) RGB images tinyvision's data gives a model taking ``input_shape`` (H, W, 1 or 3); a grey
    model's images are made grey by ``to_model_channels``. TinyVisionError for other channel counts."""
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise TinyVisionError(f"{name} takes {channels}-channel images; tinyvision feeds RGB or grey")
    return height, width, 3


def to_model_channels(images, channels):
    """float images [N, H, W, 3] -> [N, H, W, channels]: as they are for 3, grey (``GREY_WEIGHTS``) for 1. The
    weights add up to 1, so grey of normalized RGB is the normalized grey of the pixels."""
    images = np.asarray(images, np.float32)
    if channels == 3:
        return images
    return (images @ np.asarray(GREY_WEIGHTS, np.float32))[..., None].astype(np.float32)


def input_normalization(stored, scale, zero_point):
    """(mean, std) that turn pixels into a model's float input: ``stored`` (its metadata's NormalizationOptions,
    a bundle's plan.json ``normalization``) when there is one, else the convention of int8 image models trained
    elsewhere (Edge Impulse, TFLM's person detection, MLPerf Tiny): pixel p is the int8 input p - 128, i.e. the
    input's quantization (``scale``, ``zero_point``) spans the pixels 0..255: mean = 128 + zero_point, std = 1 / scale.
    An Edge Impulse model (scale 1/255, zero point -128) so takes p / 255."""
    if stored is not None:
        return float(stored[0]), float(stored[1])
    return 128.0 + float(zero_point), 1.0 / float(scale)


def renormalize(images, normalization):
    """float32 images in [-1, 1] (tinyvision's) -> the float input of a model that takes (pixel - mean) / std."""
    if tuple(normalization) == NORMALIZATION:
        return images
    mean, std = normalization
    pixels = np.asarray(images, np.float32) * NORMALIZATION_STD + NORMALIZATION_MEAN
    return ((pixels - np.float32(mean)) / np.float32(std)).astype(np.float32)
