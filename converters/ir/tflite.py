"""Import a .tflite flatbuffer into the graph IR and export it back.

Both directions go through TensorFlow's generated object API
(``schema_py_generated``), never through hand-written flatbuffer parsing.
"""
import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from converters.ir.graph import Graph, Model, Op, Quantization, SignatureDef, Tensor
from converters.ir.validate import check_flatbuffer, check_graph
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import check_tflite_bytes

OPCODE_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
OPCODE_VALUES = {k: v for v, k in OPCODE_NAMES.items()}

_DTYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.BOOL: np.bool_,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.FLOAT64: np.float64,
    schema.TensorType.UINT32: np.uint32,
    schema.TensorType.UINT16: np.uint16,
    schema.TensorType.UINT64: np.uint64,
}
_TENSOR_TYPES = {np.dtype(v): k for k, v in _DTYPES.items()}

# TFLM reads weights and biases in place from flash; 16-byte alignment keeps
# every element type naturally aligned (the TFLite converter does the same).
_BUFFER_ALIGNMENT = 16

OPTIONS_TYPES = {k: v for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}


def options_type_of(options):
    """The ``BuiltinOptions`` union tag of an ``*OptionsT`` object (0 for None)."""
    if options is None:
        return schema.BuiltinOptions.NONE
    return OPTIONS_TYPES[type(options).__name__[:-1]]


def import_model(data, name="model"):
    """Parse flatbuffer bytes into a ``Model``; raise TinyVisionError if they are not a valid TFLite model."""
    check_tflite_bytes(data, name)
    try:
        fb = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    except Exception as e:  # the generated parser raises anything on corrupt input
        raise TinyVisionError(f"{name} is not a valid TFLite model: {type(e).__name__}: {e}") from None
    if any(getattr(b, "offset", 0) > 1 for b in fb.buffers or []):
        raise TinyVisionError(f"{name} keeps buffers outside the flatbuffer (>2 GB layout), which TFLM cannot load")
    check_flatbuffer(fb, name, _opcode_name, _DTYPES)
    buffers = [_buffer_bytes(b) for b in fb.buffers or []]
    opcodes = fb.operatorCodes or []
    subgraphs = [_import_subgraph(sg, buffers, opcodes, name) for sg in fb.subgraphs]
    for graph in subgraphs:
        check_graph(graph, name)
    metadata = {_str(m.name): buffers[m.buffer] for m in fb.metadata or []}
    signatures = []
    for sig in fb.signatureDefs or []:
        graph = subgraphs[sig.subgraphIndex]
        signatures.append(
            SignatureDef(
                key=_str(sig.signatureKey),
                subgraph_index=sig.subgraphIndex,
                inputs=[(_str(m.name), graph.tensors[m.tensorIndex]) for m in sig.inputs or []],
                outputs=[(_str(m.name), graph.tensors[m.tensorIndex]) for m in sig.outputs or []],
            )
        )
    return Model(subgraphs, metadata, _str(fb.description), signatures)


def _str(value):
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _buffer_bytes(buffer):
    if buffer.data is None:
        return b""
    return np.asarray(buffer.data, dtype=np.uint8).tobytes()


def _import_subgraph(sg, buffers, opcodes, name):
    tensors = [_import_tensor(t, buffers) for t in sg.tensors or []]

    def pick(indices):
        return [tensors[i] if i >= 0 else None for i in (indices if indices is not None else [])]

    ops = []
    for fb_op in sg.operators or []:
        code = opcodes[fb_op.opcodeIndex]
        custom = _str(code.customCode) or None
        ops.append(
            Op(
                opcode=_opcode_name(code),
                inputs=pick(fb_op.inputs),
                outputs=pick(fb_op.outputs),
                options=fb_op.builtinOptions,
                version=code.version,
                custom_code=custom,
                custom_options=bytes(fb_op.customOptions) if fb_op.customOptions is not None else None,
                options2=getattr(fb_op, "builtinOptions2", None),
            )
        )
    return Graph(ops=ops, inputs=pick(sg.inputs), outputs=pick(sg.outputs), tensors=tensors, name=_str(sg.name))


def _opcode_name(code):
    """The IR's opcode string of an ``OperatorCodeT``: the builtin's name, or the custom code."""
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return _str(code.customCode) or None
    return OPCODE_NAMES.get(builtin, str(builtin))


def _import_tensor(t, buffers):
    dtype = np.dtype(_DTYPES[t.type])
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    raw = buffers[t.buffer] if t.buffer else b""
    data = None
    if raw:
        data = np.frombuffer(raw, dtype=dtype).reshape(shape)
    q = t.quantization
    quant = None
    if q is not None and q.scale is not None and len(q.scale) > 0:
        quant = Quantization(
            scale=np.asarray(q.scale, dtype=np.float32),
            zero_point=np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * len(q.scale), dtype=np.int64),
            axis=_quantized_axis(int(q.quantizedDimension), shape, len(q.scale)),
        )
    signature = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else None
    return Tensor(
        name=_str(t.name),
        shape=shape,
        dtype=dtype,
        data=data,
        quantization=quant,
        shape_signature=signature,
        is_variable=bool(t.isVariable),
    )


def _quantized_axis(axis, shape, scales):
    """The quantized dimension, normalised where TFLM accepts a value tf.lite.Interpreter refuses.

    TFLM's person-detection model gives its rank-1 depthwise biases ``quantized_dimension`` 3 (the
    filter's channel axis); TFLM never reads it for a bias, tf.lite.Interpreter rejects it. On a
    rank-1 tensor the only axis the scales can run along is 0, so that is the same quantization.
    """
    if len(shape) == 1 and axis != 0 and scales in (1, shape[0]):
        return 0
    return axis


class _AlignedBufferT(schema.BufferT):
    """A buffer whose data vector starts on a 16-byte boundary."""

    def Pack(self, builder):
        data = None
        if self.data:
            builder.StartVector(1, len(self.data), _BUFFER_ALIGNMENT)
            builder.head = builder.head - len(self.data)
            builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def short_name(name):
    """A tensor name without the converter's fused alternatives (after ';') and model prefix: its last two
    path components ('model/block_1/Conv2D;model/block_1/BN' -> 'block_1/Conv2D')."""
    return "/".join(name.split(";")[0].split("/")[-2:])


class _Exporter:
    """Collects operator codes and de-duplicated buffers while subgraphs are packed."""

    def __init__(self, short_names=False):
        self.short_names = short_names
        self.opcodes = []
        self.opcode_index = {}
        self.buffers = [_AlignedBufferT()]
        self.buffer_index = {}

    def opcode(self, op):
        builtin = OPCODE_VALUES.get(op.opcode, schema.BuiltinOperator.CUSTOM) if op.custom_code is None else (
            schema.BuiltinOperator.CUSTOM
        )
        key = (builtin, op.version, op.custom_code)
        if key not in self.opcode_index:
            code = schema.OperatorCodeT()
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = op.version
            code.customCode = op.custom_code
            self.opcode_index[key] = len(self.opcodes)
            self.opcodes.append(code)
        return self.opcode_index[key]

    def buffer(self, data, dedup=True):
        raw = bytes(data)
        if dedup and raw in self.buffer_index:
            return self.buffer_index[raw]
        b = _AlignedBufferT()
        b.data = raw
        self.buffers.append(b)
        index = len(self.buffers) - 1
        if dedup:
            self.buffer_index[raw] = index
        return index

    def tensor(self, t):
        fb = schema.TensorT()
        fb.name = short_name(t.name) if self.short_names else t.name
        fb.shape = np.asarray(t.shape, dtype=np.int32)
        fb.type = _TENSOR_TYPES[np.dtype(t.dtype)]
        fb.buffer = self.buffer(np.ascontiguousarray(t.data).tobytes()) if t.is_constant else 0
        fb.isVariable = t.is_variable
        if t.shape_signature is not None:
            fb.shapeSignature = np.asarray(t.shape_signature, dtype=np.int32)
        if t.quantization is not None:
            q = schema.QuantizationParametersT()
            q.scale = np.asarray(t.quantization.scale, dtype=np.float32)
            q.zeroPoint = np.asarray(t.quantization.zero_point, dtype=np.int64)
            q.quantizedDimension = t.quantization.axis
            fb.quantization = q
        return fb

    def subgraph(self, graph):
        tensors = graph.used_tensors()
        index = {t: i for i, t in enumerate(tensors)}

        def refs(ts):
            return np.asarray([index[t] if t is not None else -1 for t in ts], dtype=np.int32)

        sg = schema.SubGraphT()
        sg.name = graph.name
        sg.tensors = [self.tensor(t) for t in tensors]
        sg.inputs = refs(graph.inputs)
        sg.outputs = refs(graph.outputs)
        sg.operators = []
        for op in graph.ops:
            fb_op = schema.OperatorT()
            fb_op.opcodeIndex = self.opcode(op)
            fb_op.inputs = refs(op.inputs)
            fb_op.outputs = refs(op.outputs)
            fb_op.builtinOptionsType = options_type_of(op.options)
            fb_op.builtinOptions = op.options
            if op.options2 is not None:
                fb_op.builtinOptions2 = op.options2
            if op.custom_options is not None:
                fb_op.customOptions = np.frombuffer(op.custom_options, dtype=np.uint8)
            sg.operators.append(fb_op)
        return sg, index


def export_model(model):
    """Serialize a ``Model`` to TFLite flatbuffer bytes (buffers 16-byte aligned, identical constants shared)."""
    exporter = _Exporter(model.short_tensor_names)
    fb = schema.ModelT()
    fb.version = 3
    fb.description = model.description
    packed = [exporter.subgraph(g) for g in model.subgraphs]
    fb.subgraphs = [sg for sg, _ in packed]
    fb.metadata = []
    for name, data in model.metadata.items():
        m = schema.MetadataT()
        m.name = name
        m.buffer = exporter.buffer(data, dedup=False)
        fb.metadata.append(m)
    fb.signatureDefs = []
    for sig in model.signature_defs:
        _, index = packed[sig.subgraph_index]
        if not all(t in index for _, t in sig.inputs + sig.outputs):
            continue
        s = schema.SignatureDefT()
        s.signatureKey = sig.key
        s.subgraphIndex = sig.subgraph_index
        s.inputs = [_tensor_map(n, index[t]) for n, t in sig.inputs]
        s.outputs = [_tensor_map(n, index[t]) for n, t in sig.outputs]
        fb.signatureDefs.append(s)
    fb.operatorCodes = exporter.opcodes
    fb.buffers = exporter.buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor_map(name, index):
    m = schema.TensorMapT()
    m.name = name
    m.tensorIndex = index
    return m
