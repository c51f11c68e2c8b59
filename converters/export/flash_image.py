"""Several ``.tflite`` models as one flash image in which every equal vector is stored once.

A flatbuffer reaches its vectors (weight buffers, quantization scales and zero points, shapes, names)
through unsigned offsets that point forward, and no reader checks that a vector lies inside "its" model's
bytes. So the models are written back to front into one buffer, the last model first, and a model refers to
any equal vector that a model after it already holds: the weights that the border variants of one patch
stage share, and the per-channel scales and zero points that recur across models and within one (TFLite
writes a zero point as 8 bytes per channel). Model k, read from its offset to the end of the image, is a
complete flatbuffer on its own: TFLM reads it in place from flash, and ``tf.lite.Interpreter``'s verifier
accepts it. Each model is read back from the image and compared with its source, field by field, before
the image is returned.
"""
import dataclasses
import functools

import flatbuffers
import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.fileio import check_tflite_bytes

# Weight buffers start on 16-byte boundaries, as the TFLite converter writes them (TFLM reads them in place).
BUFFER_ALIGNMENT = 16
FILE_IDENTIFIER = b"TFL3"


@dataclasses.dataclass(frozen=True)
class FlashImage:
    """data: the image (its length a multiple of 16, so 16-aligned storage keeps every vector aligned);
    offsets: where each model starts, in the order given."""

    data: bytes
    offsets: tuple

    def model(self, index):
        """Model ``index`` as TFLM reads it: the image from its offset to the end."""
        return self.data[self.offsets[index]:]


def pack_models(models, check=True):
    """The ``FlashImage`` of ``models`` (a list of ``.tflite`` bytes); TinyVisionError for a model that does
    not parse or keeps a buffer outside its flatbuffer. check=False skips reading every model back (for
    size estimates only)."""
    return _pack(tuple(bytes(m) for m in models), check)


@functools.lru_cache(maxsize=8)  # an export packs the same models for its files and for its flash report
def _pack(models, check):
    from tensorflow.lite.python import schema_py_generated as schema

    parsed = [_parse(data, i, schema) for i, data in enumerate(models)]
    sources = [_written(model) for model in parsed] if check else []
    builder = _SharingBuilder()
    ends = [0] * len(parsed)
    for i in reversed(range(len(parsed))):
        model = parsed[i]
        model.buffers = [_SharedBufferT(b, schema) for b in model.buffers or []]
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        ends[i] = len(builder.Bytes) - builder.Head()
    data = bytes(builder.Output())
    image = FlashImage(data, tuple(len(data) - end for end in ends))
    for i, source in enumerate(sources):
        if _written(_parse(image.model(i), i, schema)) != source:
            raise TinyVisionError(f"model {i} does not read back from the flash image as written")
    return image


def image_size(models):
    """Bytes of the flash image of ``models``."""
    return len(pack_models(models, check=False).data)


def _parse(data, index, schema):
    check_tflite_bytes(data, f"model {index}")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    except Exception as e:  # the flatbuffer library raises whatever a bad offset leads it to
        raise TinyVisionError(f"model {index} is not a TFLite flatbuffer ({type(e).__name__})") from None
    for b in model.buffers or []:
        if (b.offset or 0) > 1:
            raise TinyVisionError(f"model {index} keeps weights outside its flatbuffer (buffer offset {b.offset}), "
                                  "which a flash image cannot share")
    return model


def _written(model):
    """The bytes the object API writes for a parsed model: equal for two models that read the same."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class _SharingBuilder(flatbuffers.Builder):
    """A builder that writes each distinct vector and string once and hands out its offset again.

    Offsets in a builder count from the end of the buffer, so one taken earlier stays valid as the
    buffer grows, and it lies after (above) everything written later: the forward offset a flatbuffer
    needs."""

    def __init__(self):
        super().__init__(1 << 16)
        self._vectors = {}

    def CreateNumpyVector(self, x):
        key = (x.dtype.str, x.tobytes())
        if key not in self._vectors:
            self._vectors[key] = super().CreateNumpyVector(x)
        return self._vectors[key]

    def CreateString(self, s, encoding="utf-8", errors="strict"):
        key = ("string", s.encode(encoding, errors) if isinstance(s, str) else bytes(s))
        if key not in self._vectors:
            self._vectors[key] = super().CreateString(s, encoding, errors)
        return self._vectors[key]

    def aligned_bytes(self, data):
        """The offset of a byte vector holding ``data`` whose first byte is 16-byte aligned."""
        key = ("weights", data)
        if key not in self._vectors:
            self.StartVector(1, len(data), BUFFER_ALIGNMENT)
            self.head -= len(data)
            self.Bytes[self.head:self.head + len(data)] = data
            self._vectors[key] = self.EndVector()
        return self._vectors[key]


class _SharedBufferT:
    """A model buffer packed through ``_SharingBuilder.aligned_bytes`` (so equal weights are written once)."""

    def __init__(self, buffer, schema):
        self._data = None if buffer.data is None else np.asarray(buffer.data, dtype=np.uint8).tobytes()
        self._offset, self._size = buffer.offset, buffer.size  # 0 or 1 (a writer's placeholder): kept as read
        self._schema = schema

    def Pack(self, builder):
        data = None if self._data is None else builder.aligned_bytes(self._data)
        self._schema.BufferStart(builder)
        if data is not None:
            self._schema.BufferAddData(builder, data)
        self._schema.BufferAddOffset(builder, self._offset)
        self._schema.BufferAddSize(builder, self._size)
        return self._schema.BufferEnd(builder)
