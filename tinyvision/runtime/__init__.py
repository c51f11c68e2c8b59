"""Host runtime: real TFLM (tflite-micro pip) and tf.lite reference runs, each in a crash-proof subprocess.

Importing this package is cheap (no TensorFlow, no TFLM): ``isolated`` runs jobs in a
child process and ``tflm`` loads TFLM only there.
"""
