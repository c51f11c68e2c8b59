"""Input normalization shared by every data source, the trainer and the TFLite metadata.

Images are stored and decoded as uint8 RGB (0..255) and fed to models as float32 in
[-1, 1] (the MobileNet convention)::

    x = (pixel - NORMALIZATION_MEAN) / NORMALIZATION_STD      # mean = std = 127.5

The same (mean, std) pair is written into the .tflite metadata (NormalizationOptions),
so an application can turn camera pixels into model input without reading this code.
"""
import numpy as np

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
