"""Scratch buffers of the Arduino libraries' CMSIS-NN kernels (Cortex-M4 with DSP, no MVE).

Every expected size is written here from the C source (the CMSIS-NN ``*_get_buffer_size``
function or kernel Prepare named in the comment) and evaluated on the real shapes and
options of small models made by the real converter; the branch each op takes is asserted
from the same shapes and options. ``cmsis_nn_scratch`` was also checked against the
library itself: the buffers TFLM's planner receives and places on a Cortex-M4 build of
Chirale_TensorFlowLite (qemu) equal ``greedy.plan`` over ``tensor_lifetimes`` plus these
requests, for these models and the zoo's MobileNetV2 / VWW models.
"""
import dataclasses

import ml_dtypes
import numpy as np
import pytest

from conftest import int8_tflite
from converters.ir import Model
from converters.planning import align_up, greedy, plan_graph
from converters.planning.scratch import SAME, cmsis_nn_scratch, op_scratch, reference_scratch, tflm_padding
from tinyvision.errors import TinyVisionError

VALID = 1  # tflite::Padding
INT16 = 2  # sizeof(int16_t)
INT32 = 4  # sizeof(int32_t)


def _graph(shape, body, int16=False):
    """The main Graph of a Keras model ``body(Input(shape))`` converted to int8 (int16=True: 16x8)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input(shape, batch_size=1)  # a static batch keeps dilation factors in the ops
    keras_model = tf.keras.Model(x, body(tf.keras.layers, x))
    if not int16:
        return Model.from_bytes(int8_tflite(keras_model)).main
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)] for _ in range(4)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return Model.from_bytes(converter.convert()).main


def _ops(graph, opcode):
    return [(i, op) for i, op in enumerate(graph.ops) if op.opcode == opcode]


def _dims(op):
    """(input channels, filter height, filter width) as the CMSIS-NN kernels' Prepare reads them."""
    _, f_h, f_w, _ = op.inputs[1].shape
    return op.inputs[0].shape[3], f_h, f_w


def _padding(op):
    """(height, width) padding from the op's options, as ComputePaddingHeightWidth gives it."""
    o, x, w = op.options, op.inputs[0], op.inputs[1]
    return (tflm_padding(o.padding, o.strideH, o.dilationHFactor, x.shape[1], w.shape[1]),
            tflm_padding(o.padding, o.strideW, o.dilationWFactor, x.shape[2], w.shape[2]))


@pytest.fixture(scope="module")
def conv_graph():
    """3x3 s2 stem, 1x1, 1x1 s2, 3x3 VALID, 3x3 dilated 2 (all int8 CONV_2D)."""
    def body(L, x):
        x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)
        x = L.Conv2D(16, 1)(x)
        x = L.Conv2D(8, 1, strides=2)(x)
        x = L.Conv2D(16, 3, padding="valid")(x)
        return L.Conv2D(8, 3, dilation_rate=2, padding="same")(x)
    return _graph((32, 32, 3), body)


@pytest.fixture(scope="module")
def dw_graph():
    """Depthwise 3x3 s1, 3x3 s2, 5x5, channel multiplier 2, dilation 2, each reading the previous output."""
    def body(L, x):
        x = L.DepthwiseConv2D(3, padding="same")(x)
        x = L.DepthwiseConv2D(3, strides=2, padding="same")(x)
        x = L.DepthwiseConv2D(5, padding="same")(x)
        x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
        return L.DepthwiseConv2D(3, dilation_rate=2, padding="same")(x)
    return _graph((16, 16, 8), body)


@pytest.fixture(scope="module")
def head_graph():
    """Average and max pool, ADD, MUL, MEAN, per-tensor FULLY_CONNECTED, SOFTMAX."""
    def body(L, x):
        a, m = L.AveragePooling2D(2)(x), L.MaxPooling2D(2)(x)
        y = L.Multiply()([L.Add()([a, m]), a])
        return L.Softmax()(L.Dense(10)(L.GlobalAveragePooling2D()(y)))
    return _graph((16, 16, 8), body)


def test_conv_wrapper_branches(conv_graph):
    scratch = cmsis_nn_scratch(conv_graph)
    convs = _ops(conv_graph, "CONV_2D")
    assert len(convs) == 5
    for i, op in convs:
        o = op.options
        c, f_h, f_w = _dims(op)
        # arm_convolve_wrapper_s8_get_buffer_size: the 1x1 fast branch needs padding 0, stride 1, no dilation
        fast = _padding(op) == (0, 0) and (f_h, f_w) == (1, 1) and (
            o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor) == (1, 1, 1, 1)
        assert op.inputs[0].shape[1] > 1  # never the 1xN branch (input height 1)
        if fast:
            # arm_convolve_1x1_s8_fast_get_buffer_size: 0, so no request
            assert i not in scratch
        else:
            # arm_convolve_s8_get_buffer_size without MVE:
            # (2 * input_dims->c * filter_dims->w * filter_dims->h) * sizeof(int16_t)
            assert scratch[i] == [2 * c * f_w * f_h * INT16]
    # the fixture's layers: only the stride-1 1x1 takes the fast path; one conv keeps its dilation
    assert [i in scratch for i, _ in convs] == [True, False, True, True, True]
    assert max(op.options.dilationHFactor for _, op in convs) == 2


@pytest.mark.parametrize("width, branch", [(16, "1xN"), (10, "general")])
def test_conv_1xn(width, branch):
    graph = _graph((1, width, 8), lambda L, x: L.Conv2D(8, (1, 3), padding="same")(x))
    (i, op), = _ops(graph, "CONV_2D")
    c, f_h, f_w = _dims(op)
    # arm_convolve_wrapper_s8_get_buffer_size: input h 1, output w % 4 == 0, filter h 1, no w dilation -> 1xN
    takes_1xn = op.inputs[0].shape[1] == 1 and op.outputs[0].shape[2] % 4 == 0 and f_h == 1
    assert takes_1xn == (branch == "1xN")
    # arm_convolve_1_x_n_s8_get_buffer_size returns arm_convolve_s8_get_buffer_size without MVE, which the
    # general branch asks too: (2 * input_dims->c * filter_dims->w * filter_dims->h) * sizeof(int16_t)
    assert cmsis_nn_scratch(graph) == {i: [2 * c * f_w * f_h * INT16]}


def test_depthwise_branches(dw_graph):
    scratch = cmsis_nn_scratch(dw_graph)
    dws = _ops(dw_graph, "DEPTHWISE_CONV_2D")
    assert len(dws) == 5
    kinds = []
    for i, op in dws:
        o = op.options
        c, f_h, f_w = _dims(op)
        ch_mult_1 = op.inputs[0].shape[3] == op.outputs[0].shape[3]
        undilated = o.dilationHFactor == o.dilationWFactor == 1
        if ch_mult_1 and undilated:
            # arm_depthwise_conv_wrapper_s8_get_buffer_size -> arm_depthwise_conv_s8_opt_get_buffer_size (DSP):
            # input_dims->c * filter_dims->w * filter_dims->h * sizeof(int16_t), also for the 3x3 kernel
            assert scratch[i] == [c * f_w * f_h * INT16]
            three = (f_h, f_w) == (3, 3) and max(_padding(op)) <= 1
            kinds.append("3x3" if three else "opt")
        else:
            # arm_depthwise_conv_s8 (channel multiplier or dilation): the wrapper asks for nothing
            assert i not in scratch
            kinds.append("generic")
    assert kinds == ["3x3", "3x3", "opt", "generic", "generic"]
    assert _padding(dws[0][1]) == (1, 1) and dws[1][1].options.strideH == 2


def test_pooling_fully_connected_and_elementwise(head_graph):
    scratch = cmsis_nn_scratch(head_graph)
    for i, op in _ops(head_graph, "AVERAGE_POOL_2D"):
        # pooling.cpp AveragePrepare -> arm_avgpool_s8_get_buffer_size (DSP): ch_src * sizeof(int32_t)
        assert scratch[i] == [op.inputs[0].shape[3] * INT32]
    (mean_i, mean), = _ops(head_graph, "MEAN")
    # reduce_common.cpp PrepareMeanOrSumHelper of the Arduino libraries: output_size * sizeof(int32_t) only
    assert scratch[mean_i] == [mean.outputs[0].size * INT32]
    # MaxPrepare, arm_fully_connected_s8_get_buffer_size, ADD, MUL, SOFTMAX: nothing
    for opcode in ("MAX_POOL_2D", "FULLY_CONNECTED", "ADD", "MUL", "SOFTMAX"):
        (i, _), = _ops(head_graph, opcode)
        assert i not in scratch
    (_, fc), = _ops(head_graph, "FULLY_CONNECTED")
    assert fc.inputs[1].quantization.scale.size == 1  # per-tensor weights, as CMSIS-NN needs


def test_fully_connected_as_1x1_convolution():
    graph = _graph((4, 8), lambda L, x: L.Dense(6)(x))
    (_, fc), = _ops(graph, "FULLY_CONNECTED")
    # fully_connected.cpp Prepare: output rank > 2 and accum_depth % 4 == 0 -> the 1x1 convolution's
    # arm_convolve_1x1_s8_fast_get_buffer_size: 0
    assert len(fc.outputs[0].shape) == 3 and fc.inputs[1].shape[-1] % 4 == 0
    assert cmsis_nn_scratch(graph) == {}


def test_int16_activations():
    def body(L, x):
        x = L.Conv2D(64, 3, padding="same")(x)
        x = L.Conv2D(16, 3, padding="same")(x)
        return L.AveragePooling2D(2)(L.DepthwiseConv2D(3, padding="same")(x))
    graph = _graph((12, 12, 8), body, int16=True)
    scratch = cmsis_nn_scratch(graph)
    convs = _ops(graph, "CONV_2D")
    assert [np.dtype(op.inputs[0].dtype) for _, op in convs] == [np.int16, np.int16]
    for i, op in convs:
        c, f_h, f_w = _dims(op)
        if f_w * f_h * c < 512:
            # arm_convolve_wrapper_s16_get_buffer_size (DSP) -> arm_convolve_fast_s16_get_buffer_size:
            # (2 * input_dims->c * filter_dims->w * filter_dims->h) * sizeof(int16_t)
            assert scratch[i] == [2 * c * f_w * f_h * INT16]
        else:
            assert i not in scratch  # arm_convolve_s16_get_buffer_size: 0
    assert [i in scratch for i, _ in convs] == [True, False]
    (dw_i, _), = _ops(graph, "DEPTHWISE_CONV_2D")
    assert dw_i not in scratch  # depthwise_conv.cpp Prepare asks CMSIS-NN for int8 inputs only
    (pool_i, pool), = _ops(graph, "AVERAGE_POOL_2D")
    # Arduino_TensorFlowLite pooling.cpp AveragePrepare: arm_avgpool_s16_get_buffer_size (DSP): ch_src * sizeof(int32_t)
    assert scratch[pool_i] == [pool.inputs[0].shape[3] * INT32]


def test_int4_filters_are_unpacked_first(conv_graph, dw_graph, head_graph):
    # converters.ir does not import INT4 tensors yet: copies of converted ops with the filter retyped.
    for graph, opcode in ((conv_graph, "CONV_2D"), (dw_graph, "DEPTHWISE_CONV_2D"), (head_graph, "FULLY_CONNECTED")):
        i, op = _ops(graph, opcode)[0]
        w = op.inputs[1]
        int4 = dataclasses.replace(w, dtype=np.dtype(ml_dtypes.int4), data=None)
        packed = dataclasses.replace(op, inputs=[op.inputs[0], int4] + op.inputs[2:])
        # conv.cpp / depthwise_conv.cpp / fully_connected.cpp Prepare: RequestScratchBufferInArena(filter
        # FlatSize) for the unpacked weights, before the kernel's own buffer
        assert op_scratch(packed, "cmsis_nn") == [int(np.prod(w.shape))] + cmsis_nn_scratch(graph).get(i, [])


def test_tflm_padding():
    # ComputePaddingHeightWidth: SAME puts the odd pixel of padding after the input, VALID pads nothing
    assert tflm_padding(SAME, 2, 1, 5, 3) == 1
    assert tflm_padding(SAME, 2, 1, 6, 3) == 0
    assert tflm_padding(SAME, 1, 2, 8, 3) == 2
    assert tflm_padding(VALID, 1, 1, 8, 3) == 0


def test_reference_and_cmsis_nn_requests_agree_where_the_reference_makes_any(small_cnn_tflite):
    """Per op, the CMSIS-NN list equals the reference list, or the reference list is empty -- except MEAN /
    SUM, where tflite-micro main also requests index buffers the Arduino libraries' kernel does not."""
    graph = Model.from_bytes(small_cnn_tflite).main
    reference, cmsis = reference_scratch(graph), cmsis_nn_scratch(graph)
    assert {graph.ops[i].opcode for i in cmsis} == {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"}
    for i, op in enumerate(graph.ops):
        ref, dev = reference.get(i, []), cmsis.get(i, [])
        if op.opcode in ("MEAN", "SUM"):
            data, axis = op.inputs[0], op.inputs[1]
            assert ref == dev + [4 * len(data.shape), 4 * axis.size]
        else:
            assert ref == dev or ref == []


def _tflm_placement(plan):
    """Where TFLM's planner puts the plan's scratch buffers, and its head: greedy.plan over every planned
    tensor at its offline offset (TFLM sees each tensor, not in-place groups) plus the scratch requests."""
    requests = [greedy.Request(lt.size, lt.first, lt.last, plan.offsets[lt.tensor]) for lt in plan.lifetimes]
    requests += [greedy.Request(s.size, s.first, s.last) for s in plan.scratch]
    offsets, head = greedy.plan(requests)
    return offsets[len(plan.lifetimes):], head


@pytest.mark.parametrize("model, in_place", [("small_cnn", True), ("dw_chain", False)])
def test_plan_with_cmsis_nn_scratch(model, in_place, small_cnn_tflite, dw_graph):
    graph = Model.from_bytes(small_cnn_tflite).main if model == "small_cnn" else dw_graph
    scratch = cmsis_nn_scratch(graph)
    plan = plan_graph(graph, scratch=scratch, in_place=in_place)  # checked by check_plan
    assert [(s.op_index, s.size) for s in plan.scratch] == [
        (op, align_up(size)) for op in sorted(scratch) for size in scratch[op]
    ]
    offsets, head = _tflm_placement(plan)
    assert [s.offset for s in plan.scratch] == offsets
    assert plan.size == head
    # without an offline plan, TFLM's head is greedy.plan over lifetimes and the same requests
    unplanned = [greedy.Request(lt.size, lt.first, lt.last) for lt in plan.lifetimes]
    unplanned += [greedy.Request(s.size, s.first, s.last) for s in plan.scratch]
    assert plan.tflm_greedy_size == greedy.plan(unplanned)[1]


def test_plan_scratch_placement_with_in_place_depthwise_chain(dw_graph):
    """TFLM places scratch against each tensor of an in-place chain, not against the chain's block: on the
    Cortex-M4 build it put this graph's depthwise scratch 400 B lower than a block-level model said."""
    plan = plan_graph(dw_graph, scratch=cmsis_nn_scratch(dw_graph))
    if not plan.in_place:
        pytest.fail("the depthwise chain should be planned in place")
    offsets, head = _tflm_placement(plan)
    assert ([s.offset for s in plan.scratch], plan.size) == (offsets, head)


def test_one_plan_for_host_and_board(small_cnn_tflite):
    """deployment_scratch: per op the board's list, or the host's where it extends it (MEAN's index buffers).
    A plan made with it puts each target's own requests where TFLM will: the host's head is TFLM's."""
    from converters.planning import deployment_scratch, target_scratch, write_offline_plan
    from converters.planning.verify import compare_on_tflm

    model = Model.from_bytes(small_cnn_tflite)
    graph = model.main
    host, board, both = reference_scratch(graph), cmsis_nn_scratch(graph), deployment_scratch(graph)
    assert set(both) == set(host) | set(board)
    for op in both:
        assert both[op] == max(host.get(op, []), board.get(op, []), key=len)
    plan = plan_graph(graph, scratch=both)
    host_scratch, host_head = target_scratch(plan, host, "host")
    board_scratch, board_head = target_scratch(plan, board, "board")
    assert host_head <= plan.size and board_head <= plan.size
    assert len(host_scratch) == sum(map(len, host.values())) and len(board_scratch) == sum(map(len, board.values()))
    unplanned = model.to_bytes()
    write_offline_plan(model, plan)
    inputs = [np.random.default_rng(0).integers(-128, 128, graph.inputs[0].shape, dtype=np.int8)]
    check = compare_on_tflm(model.to_bytes(), unplanned, inputs)
    assert check.bit_exact and check.planned_head == host_head


def test_target_scratch_that_lands_in_a_reserved_range():
    """One 5x5 depthwise convolution planned for the host's scratch (none) with a stage buffer right above
    its input and output: the board's first-fit im2col buffer lands in the stage, which TFLM cannot see."""
    from converters.planning import target_scratch

    graph = _graph((8, 8, 64), lambda L, x: L.DepthwiseConv2D(5, padding="same")(x))
    activations = 2 * 8 * 8 * 64
    stage = (activations, activations + 4096)
    plan = plan_graph(graph, reserved=[stage], scratch=reference_scratch(graph), in_place=False)
    assert plan.size == activations
    assert target_scratch(plan, reference_scratch(graph), "host") == ([], activations)
    with pytest.raises(TinyVisionError, match=r"on the board, scratch buffer 0 of op 0 \[8192, 11392\) crosses "
                                              r"the reserved range \[8192, 12288\)"):
        target_scratch(plan, cmsis_nn_scratch(graph), "board")
    board = plan_graph(graph, scratch=cmsis_nn_scratch(graph), in_place=False)  # a stage would go above
    placed, head = target_scratch(board, cmsis_nn_scratch(graph), "board")
    assert placed == board.scratch and head == board.size == activations + 64 * 5 * 5 * INT16


def test_unmodelled_and_unknown_kernels():
    graph = _graph((8, 8, 4), lambda L, x: L.Conv2DTranspose(4, 3, strides=2, padding="same")(x))
    assert "TRANSPOSE_CONV" in {op.opcode for op in graph.ops}
    with pytest.raises(TinyVisionError, match="TRANSPOSE_CONV"):
        cmsis_nn_scratch(graph, "tconv")
    with pytest.raises(ValueError, match="kernels"):
        op_scratch(graph.ops[0], "ethos_u")
