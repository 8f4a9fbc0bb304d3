"""Build small synthetic ``.tflite`` models from scratch.

Tests, the compatibility checker's test suite and the detection tests need
models with exactly the ops, shapes, dtypes and quantization they are about,
without TensorFlow. ``ModelBuilder`` stacks tensors and operators on an empty
``TfliteModel``; helpers infer output shapes the way the TFLite kernels do and
return the index of the output tensor so calls chain naturally::

    b = ModelBuilder()
    x = b.input("x", [1, 4], np.uint8, scale=0.5, zero_point=0)
    c = b.const("c", np.array([[1, 2, 3, 4]], np.uint8), scale=0.5, zero_point=0)
    b.output(b.add(x, c, scale=1.0, zero_point=0))
    model_bytes = b.build()
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from flatbuffers import flexbuffers

from ..errors import ModelError
from ._schema import schema
from .adapters import DETECTION_POSTPROCESS_OP as DETECTION_POSTPROCESS
from .tflite import DTypeLike, TensorInfo, TfliteModel, numpy_dtype, tensor_type

log = logging.getLogger(__name__)

Scale = Union[float, Sequence[float], None]
ZeroPoint = Union[int, Sequence[int], None]

_ACTIVATIONS = {k: v for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
_PADDINGS = {k: v for k, v in vars(schema.Padding).items() if not k.startswith("_")}


def detection_postprocess_options(
    max_detections: int,
    max_classes_per_detection: int,
    num_classes: int,
    nms_score_threshold: float,
    nms_iou_threshold: float,
    y_scale: float,
    x_scale: float,
    h_scale: float,
    w_scale: float,
    use_regular_nms: bool = False,
    detections_per_class: int = 100,
) -> bytes:
    """The flexbuffer map ``TFLite_Detection_PostProcess`` reads its attributes from.

    ``num_classes`` excludes the background class (the class scores input has one more column).
    """
    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key, value in (
            ("max_detections", int(max_detections)),
            ("max_classes_per_detection", int(max_classes_per_detection)),
            ("detections_per_class", int(detections_per_class)),
            ("num_classes", int(num_classes)),
        ):
            fbb.Key(key)
            fbb.Int(value)
        for key, fvalue in (
            ("nms_score_threshold", nms_score_threshold),
            ("nms_iou_threshold", nms_iou_threshold),
            ("y_scale", y_scale),
            ("x_scale", x_scale),
            ("h_scale", h_scale),
            ("w_scale", w_scale),
        ):
            fbb.Key(key)
            fbb.Float(float(fvalue))
        fbb.Key("use_regular_nms")
        fbb.Bool(bool(use_regular_nms))
    return bytes(fbb.Finish())


def _enum(table: dict, value: Union[str, int], what: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return table[value.upper()]
    except KeyError:
        raise ModelError(f"unknown {what} '{value}' (one of {', '.join(table)})") from None


def _conv_out(size: int, kernel: int, stride: int, dilation: int, padding: int) -> int:
    """Output extent of a conv/pool window along one axis, as TFLite computes it."""
    effective = (kernel - 1) * dilation + 1
    if padding == schema.Padding.SAME:
        return (size + stride - 1) // stride
    return (size - effective + stride) // stride


class ModelBuilder:
    """Accumulate tensors and operators into a one- (or multi-) subgraph TFLite model.

    All methods act on the *current* subgraph (0 unless ``use_subgraph`` changed it).
    Output quantization arguments default to the first input's quantization, which
    is what shape-only ops (reshape, pooling, pad, resize, concatenation) need.
    """

    def __init__(self, description: str = "edgetpud synthetic model") -> None:
        self._model = TfliteModel.empty(description)
        self._subgraph = self._model.add_subgraph("main")
        self._counter = 0

    # ------------------------------------------------------------------ plumbing

    @property
    def model(self) -> TfliteModel:
        """The model under construction (for mutations the builder has no helper for)."""
        return self._model

    @property
    def current_subgraph(self) -> int:
        return self._subgraph

    def add_subgraph(self, name: Optional[str] = None) -> int:
        """Append an empty subgraph (e.g. a WHILE body) and return its index; it does not become current."""
        return self._model.add_subgraph(name or f"subgraph_{self._model.subgraph_count}")

    def use_subgraph(self, index: int) -> None:
        """Make later calls add to subgraph ``index``.

        Raises:
            ModelError: no such subgraph.
        """
        if not (0 <= index < self._model.subgraph_count):
            raise ModelError(f"subgraph {index} does not exist")
        self._subgraph = index

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def info(self, index: int) -> TensorInfo:
        """The TensorInfo of a tensor of the current subgraph."""
        return self._model.tensor(index, self._subgraph)

    # ------------------------------------------------------------------ tensors

    def tensor(
        self,
        name: Optional[str],
        shape: Sequence[int],
        dtype: DTypeLike = np.uint8,
        scale: Scale = None,
        zero_point: ZeroPoint = None,
        shape_signature: Optional[Sequence[int]] = None,
        scales: Optional[Sequence[float]] = None,
        zero_points: Optional[Sequence[int]] = None,
        quantized_dimension: int = 0,
    ) -> int:
        """Add an activation tensor (no data) and return its index.

        Raises:
            ModelError: unknown dtype or inconsistent quantization.
        """
        return self._model.add_tensor(
            name or self._name("t"), shape, dtype, None, scale, zero_point, scales, zero_points,
            quantized_dimension, shape_signature, subgraph=self._subgraph,
        )

    def input(
        self,
        name: str,
        shape: Sequence[int],
        dtype: DTypeLike = np.uint8,
        scale: Scale = None,
        zero_point: ZeroPoint = None,
        shape_signature: Optional[Sequence[int]] = None,
    ) -> int:
        """Add a subgraph input tensor. A ``-1`` in ``shape_signature`` makes that dimension dynamic."""
        index = self.tensor(name, shape, dtype, scale, zero_point, shape_signature)
        self._model.set_inputs(self._model.input_indices(self._subgraph) + [index], self._subgraph)
        return index

    def const(
        self,
        name: Optional[str],
        array: np.ndarray,
        scale: Scale = None,
        zero_point: ZeroPoint = None,
        scales: Optional[Sequence[float]] = None,
        zero_points: Optional[Sequence[int]] = None,
        quantized_dimension: int = 0,
        dtype: Optional[DTypeLike] = None,
    ) -> int:
        """Add a constant tensor holding ``array`` (typed by ``dtype`` or the array's dtype).

        Raises:
            ModelError: the dtype has no TFLite type, or quantization is inconsistent.
        """
        array = np.asarray(array)
        if dtype is not None:
            array = array.astype(numpy_dtype(tensor_type(dtype)))
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        return self._model.add_tensor(
            name or self._name("const"), list(array.shape), dtype if dtype is not None else array.dtype,
            data.tobytes() if data.size else None, scale, zero_point, scales, zero_points,
            quantized_dimension, subgraph=self._subgraph,
        )

    def output(self, *indices: int) -> None:
        """Mark tensors as outputs of the current subgraph (in call order)."""
        self._model.set_outputs(self._model.output_indices(self._subgraph) + list(indices), self._subgraph)

    def build_model(self) -> TfliteModel:
        """The finished model object.

        Raises:
            ModelError: a subgraph has no outputs.
        """
        for s in range(self._model.subgraph_count):
            if not self._model.output_indices(s):
                raise ModelError(f"subgraph {s} has no outputs: call output() first")
        return self._model

    def build(self) -> bytes:
        """Serialize the model to ``.tflite`` bytes.

        Raises:
            ModelError: a subgraph has no outputs, or packing failed.
        """
        return self.build_model().to_bytes()

    # ------------------------------------------------------------------ operators

    def op(
        self,
        opname: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        custom_code: Optional[str] = None,
        custom_options: Optional[bytes] = None,
        version: int = 1,
    ) -> int:
        """Add any operator between existing tensors and return the operator index.

        Raises:
            ModelError: unknown op, wrong options class, or a bad tensor index.
        """
        return self._model.add_operator(
            opname, inputs, outputs, options, custom_code, custom_options, version, subgraph=self._subgraph
        )

    def custom(
        self,
        code: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Optional[bytes] = None,
    ) -> int:
        """Add a custom operator (``code`` is its name) and return the operator index."""
        return self.op("CUSTOM", inputs, outputs, custom_code=code, custom_options=options)

    def _out(
        self,
        prefix: str,
        like: int,
        shape: Sequence[int],
        scale: Scale,
        zero_point: ZeroPoint,
        dtype: Optional[DTypeLike] = None,
        name: Optional[str] = None,
        keep_batch: bool = True,
    ) -> int:
        """Create an op's output tensor, inheriting dtype, quantization and a dynamic batch from ``like``."""
        src = self.info(like)
        if scale is None and zero_point is None and dtype is None and src.scales.size == 1:
            scale, zero_point = src.scale, src.zero_point
        signature = None
        if keep_batch and src.shape_signature and src.shape_signature[0] == -1 and len(shape) == len(src.shape):
            signature = [-1] + [int(d) for d in shape[1:]]
        return self.tensor(
            name or self._name(prefix), [int(d) for d in shape], dtype if dtype is not None else src.dtype,
            scale, zero_point, shape_signature=signature,
        )

    def _rank(self, index: int, rank: int, op: str) -> Tuple[int, ...]:
        shape = self.info(index).shape
        if len(shape) != rank:
            raise ModelError(f"{op} needs a {rank}-D tensor, tensor {index} has shape {list(shape)}")
        return shape

    def _zero_bias(self, x: int, weights: int, channels: int) -> int:
        """A zero bias (the kernels want one): int32 at input scale x weight scale(s) when quantized."""
        src, w = self.info(x), self.info(weights)
        if not np.issubdtype(src.dtype, np.integer) or not src.scales.size or not w.scales.size:
            return self.const(None, np.zeros(channels, np.float32))
        bias_dtype = np.int64 if src.dtype == np.int16 else np.int32
        scales = [float(src.scale) * float(s) for s in w.scales]
        return self.const(None, np.zeros(channels, bias_dtype), scales=scales, zero_points=[0] * len(scales))

    def conv2d(
        self,
        x: int,
        weights: int,
        bias: Optional[int] = None,
        stride: Union[int, Tuple[int, int]] = 1,
        padding: str = "SAME",
        activation: str = "NONE",
        dilation: Union[int, Tuple[int, int]] = 1,
        scale: Scale = None,
        zero_point: ZeroPoint = None,
        name: Optional[str] = None,
    ) -> int:
        """CONV_2D: x [N,H,W,C] with weights [O,KH,KW,C] and bias [O] (zeros if None) -> [N,OH,OW,O].

        Raises:
            ModelError: wrong ranks, unknown padding or activation.
        """
        return self._conv("CONV_2D", "conv2d", schema.Conv2DOptionsT(), 0, x, weights, bias, stride, padding,
                          activation, dilation, scale, zero_point, name)

    def depthwise_conv2d(
        self,
        x: int,
        weights: int,
        bias: Optional[int] = None,
        stride: Union[int, Tuple[int, int]] = 1,
        padding: str = "SAME",
        activation: str = "NONE",
        dilation: Union[int, Tuple[int, int]] = 1,
        depth_multiplier: int = 1,
        scale: Scale = None,
        zero_point: ZeroPoint = None,
        name: Optional[str] = None,
    ) -> int:
        """DEPTHWISE_CONV_2D: x [N,H,W,C] with weights [1,KH,KW,C*M] and bias (zeros if None) -> [N,OH,OW,C*M].

        Raises:
            ModelError: wrong ranks, unknown padding or activation.
        """
        opts = schema.DepthwiseConv2DOptionsT()
        opts.depthMultiplier = depth_multiplier
        return self._conv("DEPTHWISE_CONV_2D", "depthwise_conv2d", opts, 3, x, weights, bias, stride, padding,
                          activation, dilation, scale, zero_point, name)

    def _conv(
        self,
        op: str,
        prefix: str,
        opts: Any,
        channels_axis: int,
        x: int,
        weights: int,
        bias: Optional[int],
        stride: Union[int, Tuple[int, int]],
        padding: str,
        activation: str,
        dilation: Union[int, Tuple[int, int]],
        scale: Scale,
        zero_point: ZeroPoint,
        name: Optional[str],
    ) -> int:
        """The shape arithmetic, zero bias and options CONV_2D and DEPTHWISE_CONV_2D share.

        They differ only in the options class (``opts``, with any op-only fields set) and
        in which weights axis holds the output channels (``channels_axis``: 0 or 3).
        """
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        n, h, w, _ = self._rank(x, 4, op)
        weights_shape = self._rank(weights, 4, op)
        kh, kw, o = weights_shape[1], weights_shape[2], weights_shape[channels_axis]
        if bias is None:
            bias = self._zero_bias(x, weights, o)
        pad = _enum(_PADDINGS, padding, "padding")
        out_shape = [n, _conv_out(h, kh, sh, dh, pad), _conv_out(w, kw, sw, dw, pad), o]
        out = self._out(prefix, x, out_shape, scale, zero_point, name=name)
        opts.padding, opts.strideH, opts.strideW = pad, sh, sw
        opts.dilationHFactor, opts.dilationWFactor = dh, dw
        opts.fusedActivationFunction = _enum(_ACTIVATIONS, activation, "activation")
        self.op(op, [x, weights, bias], [out], opts)
        return out

    def fully_connected(
        self,
        x: int,
        weights: int,
        bias: Optional[int] = None,
        activation: str = "NONE",
        keep_num_dims: bool = False,
        scale: Scale = None,
        zero_point: ZeroPoint = None,
        name: Optional[str] = None,
    ) -> int:
        """FULLY_CONNECTED: x [..., I] with weights [O, I] -> [batch, O] (or [..., O] with keep_num_dims)."""
        in_shape = self.info(x).shape
        units, depth = self._rank(weights, 2, "FULLY_CONNECTED")
        if keep_num_dims:
            out_shape = list(in_shape[:-1]) + [units]
        else:
            out_shape = [int(np.prod(in_shape, dtype=np.int64)) // depth, units]
        out = self._out("fully_connected", x, out_shape, scale, zero_point, name=name)
        opts = schema.FullyConnectedOptionsT()
        opts.fusedActivationFunction = _enum(_ACTIVATIONS, activation, "activation")
        opts.keepNumDims = keep_num_dims
        self.op("FULLY_CONNECTED", [x, weights, -1 if bias is None else bias], [out], opts)
        return out

    def _binary(self, opname: str, options: Any, a: int, b: int, scale: Scale, zero_point: ZeroPoint,
                name: Optional[str]) -> int:
        shape = np.broadcast_shapes(self.info(a).shape, self.info(b).shape)
        out = self._out(opname.lower(), a, shape, scale, zero_point, name=name)
        self.op(opname, [a, b], [out], options)
        return out

    def add(self, a: int, b: int, activation: str = "NONE", scale: Scale = None, zero_point: ZeroPoint = None,
            name: Optional[str] = None) -> int:
        """ADD with numpy broadcasting of the two inputs."""
        opts = schema.AddOptionsT()
        opts.fusedActivationFunction = _enum(_ACTIVATIONS, activation, "activation")
        return self._binary("ADD", opts, a, b, scale, zero_point, name)

    def mul(self, a: int, b: int, activation: str = "NONE", scale: Scale = None, zero_point: ZeroPoint = None,
            name: Optional[str] = None) -> int:
        """MUL with numpy broadcasting of the two inputs."""
        opts = schema.MulOptionsT()
        opts.fusedActivationFunction = _enum(_ACTIVATIONS, activation, "activation")
        return self._binary("MUL", opts, a, b, scale, zero_point, name)

    def reshape(self, x: int, shape: Sequence[int], name: Optional[str] = None) -> int:
        """RESHAPE to ``shape`` (one ``-1`` allowed), with the shape also given as an int32 const input."""
        count = int(np.prod(self.info(x).shape, dtype=np.int64))
        new_shape = [int(d) for d in shape]
        if new_shape.count(-1) == 1:
            known = int(np.prod([d for d in new_shape if d != -1], dtype=np.int64)) or 1
            new_shape[new_shape.index(-1)] = count // known
        if int(np.prod(new_shape, dtype=np.int64)) != count:
            raise ModelError(f"cannot reshape {list(self.info(x).shape)} to {list(shape)}")
        shape_tensor = self.const(None, np.asarray(list(shape), dtype=np.int32))
        out = self._out("reshape", x, new_shape, None, None, name=name, keep_batch=False)
        opts = schema.ReshapeOptionsT()
        opts.newShape = [int(d) for d in shape]
        self.op("RESHAPE", [x, shape_tensor], [out], opts)
        return out

    def _unit_interval(self, x: int, scale: Scale, zero_point: ZeroPoint) -> Tuple[Scale, ZeroPoint]:
        """Output quantization of an op whose values lie in [0, 1): 1/256 when x is quantized and none is given."""
        src = self.info(x)
        if src.scales.size and scale is None:
            return 1.0 / 256, (-128 if src.dtype == np.int8 else 0)
        return scale, zero_point

    def softmax(self, x: int, beta: float = 1.0, scale: Scale = None, zero_point: ZeroPoint = None,
                name: Optional[str] = None) -> int:
        """SOFTMAX over the last axis; quantized outputs default to 1/256 (zero point 0 uint8, -128 int8)."""
        scale, zero_point = self._unit_interval(x, scale, zero_point)
        out = self._out("softmax", x, self.info(x).shape, scale, zero_point, name=name)
        opts = schema.SoftmaxOptionsT()
        opts.beta = beta
        self.op("SOFTMAX", [x], [out], opts)
        return out

    def logistic(self, x: int, scale: Scale = None, zero_point: ZeroPoint = None, name: Optional[str] = None) -> int:
        """LOGISTIC (sigmoid); quantized outputs default to 1/256 (zero point 0 uint8, -128 int8)."""
        scale, zero_point = self._unit_interval(x, scale, zero_point)
        out = self._out("logistic", x, self.info(x).shape, scale, zero_point, name=name)
        self.op("LOGISTIC", [x], [out])
        return out

    def concatenation(self, inputs: Sequence[int], axis: int = -1, activation: str = "NONE",
                      scale: Scale = None, zero_point: ZeroPoint = None, name: Optional[str] = None) -> int:
        """CONCATENATION of ``inputs`` along ``axis``."""
        shapes = [list(self.info(i).shape) for i in inputs]
        rank = len(shapes[0])
        ax = axis % rank
        out_shape = list(shapes[0])
        out_shape[ax] = sum(s[ax] for s in shapes)
        out = self._out("concatenation", inputs[0], out_shape, scale, zero_point, name=name)
        opts = schema.ConcatenationOptionsT()
        opts.axis = axis
        opts.fusedActivationFunction = _enum(_ACTIVATIONS, activation, "activation")
        self.op("CONCATENATION", list(inputs), [out], opts)
        return out

    def _pool(self, opname: str, x: int, filter_size: Union[int, Tuple[int, int]], stride: Union[int, Tuple[int, int]],
              padding: str, activation: str, name: Optional[str]) -> int:
        fh, fw = (filter_size, filter_size) if isinstance(filter_size, int) else filter_size
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        n, h, w, c = self._rank(x, 4, opname)
        pad = _enum(_PADDINGS, padding, "padding")
        out_shape = [n, _conv_out(h, fh, sh, 1, pad), _conv_out(w, fw, sw, 1, pad), c]
        out = self._out(opname.lower(), x, out_shape, None, None, name=name)
        opts = schema.Pool2DOptionsT()
        opts.padding, opts.strideH, opts.strideW, opts.filterHeight, opts.filterWidth = pad, sh, sw, fh, fw
        opts.fusedActivationFunction = _enum(_ACTIVATIONS, activation, "activation")
        self.op(opname, [x], [out], opts)
        return out

    def max_pool2d(self, x: int, filter_size: Union[int, Tuple[int, int]] = 2, stride: Union[int, Tuple[int, int]] = 2,
                   padding: str = "VALID", activation: str = "NONE", name: Optional[str] = None) -> int:
        """MAX_POOL_2D (output keeps the input's quantization, as the kernel requires)."""
        return self._pool("MAX_POOL_2D", x, filter_size, stride, padding, activation, name)

    def average_pool2d(self, x: int, filter_size: Union[int, Tuple[int, int]] = 2,
                       stride: Union[int, Tuple[int, int]] = 2, padding: str = "VALID", activation: str = "NONE",
                       name: Optional[str] = None) -> int:
        """AVERAGE_POOL_2D (output keeps the input's quantization, as the kernel requires)."""
        return self._pool("AVERAGE_POOL_2D", x, filter_size, stride, padding, activation, name)

    def quantize(self, x: int, dtype: DTypeLike, scale: float, zero_point: int, name: Optional[str] = None) -> int:
        """QUANTIZE a float tensor (or requantize an integer one) to ``dtype``/``scale``/``zero_point``."""
        out = self._out("quantize", x, self.info(x).shape, scale, zero_point, dtype=dtype, name=name)
        self.op("QUANTIZE", [x], [out])
        return out

    def dequantize(self, x: int, name: Optional[str] = None) -> int:
        """DEQUANTIZE to float32."""
        src = self.info(x)
        out = self.tensor(name or self._name("dequantize"), src.shape, np.float32,
                          shape_signature=src.shape_signature if src.is_dynamic else None)
        self.op("DEQUANTIZE", [x], [out])
        return out

    def mean(self, x: int, axes: Sequence[int], keep_dims: bool = True, scale: Scale = None,
             zero_point: ZeroPoint = None, name: Optional[str] = None) -> int:
        """MEAN over ``axes`` (given as an int32 const input)."""
        shape = list(self.info(x).shape)
        rank = len(shape)
        reduced = {a % rank for a in axes}
        out_shape = [1 if i in reduced else d for i, d in enumerate(shape)] if keep_dims else [
            d for i, d in enumerate(shape) if i not in reduced
        ]
        axes_tensor = self.const(None, np.asarray(list(axes), dtype=np.int32))
        out = self._out("mean", x, out_shape, scale, zero_point, name=name, keep_batch=keep_dims)
        opts = schema.ReducerOptionsT()
        opts.keepDims = keep_dims
        self.op("MEAN", [x, axes_tensor], [out], opts)
        return out

    def pad(self, x: int, paddings: Sequence[Sequence[int]], name: Optional[str] = None) -> int:
        """PAD with zeros (the zero point when quantized); ``paddings`` is [[before, after]] per axis."""
        pads = np.asarray(paddings, dtype=np.int32).reshape(-1, 2)
        shape = [int(d + p[0] + p[1]) for d, p in zip(self.info(x).shape, pads)]
        pads_tensor = self.const(None, pads)
        out = self._out("pad", x, shape, None, None, name=name)
        self.op("PAD", [x, pads_tensor], [out])
        return out

    def resize_bilinear(self, x: int, size: Tuple[int, int], align_corners: bool = False,
                        half_pixel_centers: bool = True, name: Optional[str] = None) -> int:
        """RESIZE_BILINEAR of x [N,H,W,C] to [N,size[0],size[1],C]."""
        n, _, _, c = self._rank(x, 4, "RESIZE_BILINEAR")
        size_tensor = self.const(None, np.asarray(size, dtype=np.int32))
        out = self._out("resize_bilinear", x, [n, int(size[0]), int(size[1]), c], None, None, name=name)
        opts = schema.ResizeBilinearOptionsT()
        opts.alignCorners, opts.halfPixelCenters = align_corners, half_pixel_centers
        self.op("RESIZE_BILINEAR", [x, size_tensor], [out], opts)
        return out

    def detection_postprocess(
        self,
        box_encodings: int,
        class_predictions: int,
        anchors: int,
        max_detections: int = 10,
        max_classes_per_detection: int = 1,
        nms_score_threshold: float = 0.0,
        nms_iou_threshold: float = 0.5,
        y_scale: float = 10.0,
        x_scale: float = 10.0,
        h_scale: float = 5.0,
        w_scale: float = 5.0,
        use_regular_nms: bool = False,
        detections_per_class: int = 100,
    ) -> Tuple[int, int, int, int]:
        """The SSD tail: ``TFLite_Detection_PostProcess`` -> (boxes, classes, scores, count) float32 tensors.

        ``class_predictions`` is [1, N, num_classes + 1] (column 0 is background);
        ``box_encodings`` [1, N, 4] and ``anchors`` [N, 4] are (y, x, h, w) encoded.
        """
        num_classes = int(self.info(class_predictions).shape[-1]) - 1
        count = max_detections * max_classes_per_detection
        boxes = self.tensor(self._name("detection_boxes"), [1, count, 4], np.float32)
        classes = self.tensor(self._name("detection_classes"), [1, count], np.float32)
        scores = self.tensor(self._name("detection_scores"), [1, count], np.float32)
        num = self.tensor(self._name("num_detections"), [1], np.float32)
        options = detection_postprocess_options(
            max_detections, max_classes_per_detection, num_classes, nms_score_threshold, nms_iou_threshold,
            y_scale, x_scale, h_scale, w_scale, use_regular_nms, detections_per_class,
        )
        self.custom(DETECTION_POSTPROCESS, [box_encodings, class_predictions, anchors], [boxes, classes, scores, num],
                    options)
        return boxes, classes, scores, num


def quantize_array(values: np.ndarray, scale: float, zero_point: int, dtype: DTypeLike = np.uint8) -> np.ndarray:
    """Affine-quantize real values (round half away from zero, clamp), for building constants."""
    np_dtype = np.dtype(dtype)
    info = np.iinfo(np_dtype)
    q = np.asarray(values, dtype=np.float64) / scale
    q = np.where(q >= 0, np.floor(q + 0.5), np.ceil(q - 0.5)) + zero_point
    return np.clip(q, info.min, info.max).astype(np_dtype)


def symmetric_scale(values: np.ndarray, bits: int = 8) -> float:
    """The per-tensor scale that maps max |value| onto the signed range (what the converter uses)."""
    peak = float(np.max(np.abs(values))) if np.size(values) else 0.0
    return peak / (2 ** (bits - 1) - 1) if peak > 0 else 1.0


__all__ = [
    "DETECTION_POSTPROCESS",
    "ModelBuilder",
    "detection_postprocess_options",
    "quantize_array",
    "symmetric_scale",
]
