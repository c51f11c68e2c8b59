"""tinyvision: design memory-efficient CNNs in Keras and deploy them on microcontrollers with TFLM.

tfmot needs Keras 2, which TensorFlow 2.21 only provides through ``tf_keras`` when
``TF_USE_LEGACY_KERAS`` is set before TensorFlow is first imported; importing this
package first guarantees that.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
