"""Model export for firmware: the .tflite as C++ source (``c_array``)."""
from converters.export.c_array import c_identifier, check_identifier, export_c_array, render_c_array

__all__ = ["c_identifier", "check_identifier", "export_c_array", "render_c_array"]
