"""Data for training and calibration: the built-in procedural dataset and loaders for data on disk.

All sources yield float32 images in [-1, 1] (``(pixel - 127.5) / 127.5``, see
:mod:`tinyvision.data.normalization`) and int32 labels.
"""
from tinyvision.data.loaders import image_folder_dataset, make_example, tfrecord_dataset
from tinyvision.data.normalization import (NORMALIZATION, NORMALIZATION_MEAN, NORMALIZATION_STD, denormalize,
                                           normalize)
from tinyvision.data.synthetic import (SHAPE_CLASSES, VWW_CLASSES, class_names, render_sample, synthetic_arrays,
                                       synthetic_dataset, synthetic_pixels)

__all__ = [
    "NORMALIZATION", "NORMALIZATION_MEAN", "NORMALIZATION_STD", "normalize", "denormalize",
    "SHAPE_CLASSES", "VWW_CLASSES", "class_names", "render_sample", "synthetic_arrays", "synthetic_dataset",
    "synthetic_pixels", "image_folder_dataset", "tfrecord_dataset", "make_example",
]
