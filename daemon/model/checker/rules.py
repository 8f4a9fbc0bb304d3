"""The Edge TPU rule table, written to read like Coral's documentation.

One data structure, ``RULES``: the general requirements every mapped operator
must meet, and for each supported operation the TFLite builtins it covers, the
minimum Edge TPU runtime it needs and its known limitations. Each limitation is
a human sentence plus a small named check (``limitations.py``). Keeping the
table as data means a new compiler release is an edit here, not a hunt through
code. Source: coral.ai/docs/edgetpu/models-intro (supported operations).

A few rules are not in that documentation: they are what edgetpu_compiler was
seen to do on published model pairs (``X.tflite`` and its ``X_edgetpu.tflite``).
Those carry an ``Evidence`` naming the compiler version and the pair, so the
report can tell a documented rule from an observed one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from . import limitations as lim
from .context import OpContext

ALL_RUNTIMES = 0
DEFAULT_RUNTIME = 14
# The newest runtime whose rules Coral documents; later ones are checked with these rules.
NEWEST_DOCUMENTED_RUNTIME = 14

UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
NOT_SUPPORTED = "Operation not supported"


@dataclass(frozen=True)
class Evidence:
    """Where a rule comes from: Coral's documentation, or the compiler's observed behaviour.

    An observed rule is only as wide as the cases it was read from; ``compiler``
    is the edgetpu_compiler version those cases were compiled with.
    """

    compiler: Optional[str] = None  # None: documented
    seen_in: str = ""

    @property
    def observed(self) -> bool:
        return self.compiler is not None

    def describe(self) -> str:
        """One phrase for the report: 'documented' or 'observed on edgetpu_compiler 16 (...)'."""
        if not self.observed:
            return "documented"
        return f"observed behaviour of edgetpu_compiler {self.compiler}, not documented ({self.seen_in})"

    def to_dict(self) -> dict:
        return {"basis": "observed" if self.observed else "documented",
                "compiler_version": self.compiler, "seen_in": self.seen_in or None}


DOCUMENTED = Evidence()
# The compiler version the published segmentation and pose pairs were compiled with.
OBSERVED_COMPILER = "16"


def observed(seen_in: str) -> Evidence:
    """Evidence of a rule read from compiled model pairs of edgetpu_compiler 16."""
    return Evidence(OBSERVED_COMPILER, seen_in)


@dataclass(frozen=True)
class Limitation:
    """One sentence of the documentation and the check that enforces it.

    ``since``/``until`` bound the runtime versions it applies to. An advisory
    limitation never moves an op to the CPU: it only adds a warning.
    """

    text: str
    check: Callable[[OpContext], Optional[str]]
    since: int = ALL_RUNTIMES
    until: Optional[int] = None
    advisory: bool = False
    status: str = UNSPECIFIED
    evidence: Evidence = DOCUMENTED
    threshold: bool = False  # a number no document gives: the prediction may differ

    @property
    def name(self) -> str:
        return self.check.__name__.replace("_", "-")

    def applies(self, runtime: int) -> bool:
        return runtime >= self.since and (self.until is None or runtime <= self.until)


@dataclass(frozen=True)
class Param:
    """An input that is a parameter, not data: weights, bias, index (axis, shape...) or state."""

    position: int
    name: str
    kind: str  # "weights" | "bias" | "index" | "state"


@dataclass(frozen=True)
class OpRule:
    """A supported operation as Coral's table lists it."""

    title: str
    builtins: tuple[str, ...]
    min_runtime: int = ALL_RUNTIMES
    limitations: tuple[Limitation, ...] = ()
    params: tuple[Param, ...] = ()
    evidence: Evidence = DOCUMENTED  # whether the op is in Coral's list or was seen mapped


@dataclass(frozen=True)
class Conversion:
    """Ops at the edge of the graph that run on the CPU without cutting the Edge TPU region.

    ``side`` is "input" (before the region: they only convert a model input)
    or "output" (after it: they only convert a model output). ``status`` is the
    line the compiler logs for such an op.
    """

    id: str
    side: str
    builtins: tuple[str, ...]
    text: str
    status: str
    evidence: Evidence = DOCUMENTED


@dataclass(frozen=True)
class RuleTable:
    general: tuple[Limitation, ...]
    ops: tuple[OpRule, ...]
    conversions: tuple[Conversion, ...] = ()
    by_builtin: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for rule in self.ops:
            for name in rule.builtins:
                self.by_builtin[name] = rule

    def rule_for(self, op: str) -> Optional[OpRule]:
        """The rule of a builtin op name, or None when the Edge TPU has no kernel for it."""
        return self.by_builtin.get(op)

    def conversion(self, rule_id: str, op: str) -> Conversion:
        """The I/O conversion rule ``rule_id`` as it applies to builtin ``op``.

        Raises:
            KeyError: the table has no such conversion for that op.
        """
        for c in self.conversions:
            if c.id == rule_id and op in c.builtins:
                return c
        raise KeyError((rule_id, op))


def until(version: int, text: str, check: Callable, **kw) -> Limitation:
    """A limitation of runtime ``version`` and older."""
    return Limitation(text, check, until=version, **kw)


def since(version: int, text: str, check: Callable, **kw) -> Limitation:
    """A limitation of runtime ``version`` and newer."""
    return Limitation(text, check, since=version, **kw)


def always(text: str, check: Callable, **kw) -> Limitation:
    return Limitation(text, check, **kw)


def weights(position: int = 1, name: str = "filter") -> Param:
    return Param(position, name, "weights")


def bias(position: int = 2) -> Param:
    return Param(position, "bias", "bias")


def index(position: int, name: str) -> Param:
    return Param(position, name, "index")


NO_FUSED_ACTIVATION = always("No fused activation function.", lim.no_fused_activation)
SAME_DILATION = always("Dilation must be the same in x and y.", lim.same_dilation_xy)
NOT_BATCH_REDUCTION = always("Cannot reduce over the batch dimension.", lim.reduces_not_batch)
CONV_PARAMS = (weights(1, "filter"), bias(2))

_LSTM_PARAMS = (
    *(weights(i, "weights") for i in range(1, 12)),
    *(bias(i) for i in range(12, 16)),
    weights(16, "projection weights"),
    bias(17),
    Param(18, "output state", "state"),
    Param(19, "cell state", "state"),
    *(weights(i, "layer-norm coefficients") for i in range(20, 24)),
)

# What edgetpu_compiler 16 was seen to do on Coral's published segmentation and pose pairs.
_DEEPLAB_POOLING = observed(
    "DeepLab v3 MobileNet v2 513x513: the image-pooling RESIZE_BILINEAR [1,1,1,256] -> "
    "[1,33,33,256] (align_corners) is left on the CPU"
)
_DEEPLAB_FINAL = observed(
    "EdgeTPU-slim DeepLab: RESIZE_BILINEAR [1,33,33,19] -> [1,33,33,19] is mapped, "
    "[1,33,33,19] -> [1,513,513,19] (x15.5) is left on the CPU"
)
_DEEPLAB_TILE = observed(
    "EdgeTPU-slim DeepLab: TILE [1,1,1,128] -> [1,33,33,128] is inside the edgetpu-custom-op"
)
_MOVENET_PREFIX = observed(
    "MoveNet pose model: compiled to CAST, QUANTIZE, edgetpu-custom-op, ARG_MAX, ..."
)

CONVERSIONS = (
    Conversion("float-io", "input", ("QUANTIZE",),
               "A QUANTIZE of a float model input to 8 bits runs on the CPU before the Edge TPU.",
               UNSPECIFIED),
    Conversion("float-io", "output", ("DEQUANTIZE",),
               "A DEQUANTIZE to a float model output runs on the CPU after the Edge TPU.",
               UNSUPPORTED_TYPE),
    Conversion("input-cast", "input", ("CAST",),
               "Leading CASTs of a model input to float that only feed the input QUANTIZE run on "
               "the CPU before the Edge TPU.", NOT_SUPPORTED, _MOVENET_PREFIX),
    Conversion("input-cast", "input", ("QUANTIZE",),
               "The QUANTIZE to 8 bits after such leading CASTs runs on the CPU before the Edge TPU.",
               UNSPECIFIED, _MOVENET_PREFIX),
)

RULES = RuleTable(
    conversions=CONVERSIONS,
    general=(
        always(
            "Tensor parameters are quantized to 8 bits (int8 or uint8); biases may be int32.",
            lim.eight_bit,
            status="Operation is working on an unsupported data type",
        ),
        always("Tensor sizes are constant at compile time (no dynamic shapes).", lim.static_shape),
        always("Model parameters such as bias tensors are constant at compile time.",
               lim.constant_parameters),
        always(
            "Tensors are 1-, 2- or 3-dimensional; a tensor with more dimensions may only "
            "have size > 1 in its 3 innermost dimensions.",
            lim.at_most_3d,
            status="Tensor has unsupported rank (up to 3 innermost dimensions mapped)",
        ),
    ),
    ops=(
        OpRule("Add", ("ADD",)),
        OpRule("AveragePool2d", ("AVERAGE_POOL_2D",), limitations=(NO_FUSED_ACTIVATION,)),
        OpRule("Concatenation", ("CONCATENATION",), limitations=(
            NO_FUSED_ACTIVATION,
            always("A constant input is allowed only as one of exactly 2 inputs, and it must "
                   "be all zeros.", lim.constant_only_zeros_pair),
        )),
        OpRule("Conv2d", ("CONV_2D",), limitations=(SAME_DILATION,), params=CONV_PARAMS),
        OpRule("DepthwiseConv2d", ("DEPTHWISE_CONV_2D",), params=CONV_PARAMS, limitations=(
            until(12, "Dilated convolution is not supported.", lim.no_dilation),
            since(13, "Dilation must be the same in x and y.", lim.same_dilation_xy),
        )),
        OpRule("ExpandDims", ("EXPAND_DIMS",), min_runtime=13, params=(index(1, "axis"),)),
        OpRule("FullyConnected", ("FULLY_CONNECTED",), params=(weights(1, "weights"), bias(2)),
               limitations=(
            always("Only the default weights format is supported.", lim.default_weights_format),
            always("Output must be 1-dimensional.", lim.one_d_output),
        )),
        OpRule("L2Normalization", ("L2_NORMALIZATION",)),
        OpRule("Logistic", ("LOGISTIC",)),
        OpRule("LSTM", ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"),
               min_runtime=14, params=_LSTM_PARAMS, limitations=(
            always("Unidirectional LSTM only.", lim.unidirectional_only),
        )),
        OpRule("Maximum", ("MAXIMUM",)),
        OpRule("MaxPool2d", ("MAX_POOL_2D",), limitations=(NO_FUSED_ACTIVATION,)),
        OpRule("Mean", ("MEAN",), params=(index(1, "axis"),), limitations=(
            until(12, "Reduction only in x/y, not in the batch dimension.", lim.reduces_xy_only),
            since(13, "No reduction in the batch dimension.", lim.reduces_not_batch),
            since(13, "Reduction in z only when z is a multiple of 4.",
                  lim.z_reduction_multiple_of_4),
        )),
        OpRule("Minimum", ("MINIMUM",)),
        OpRule("Mul", ("MUL",)),
        OpRule("Pack", ("PACK",), min_runtime=13, limitations=(
            always("No packing in the batch dimension.", lim.packs_not_batch),
        )),
        OpRule("Pad", ("PAD",), params=(index(1, "paddings"),), limitations=(
            until(12, "Padding only in x/y.", lim.pads_xy_only),
            since(13, "No padding in the batch dimension.", lim.pads_not_batch),
        )),
        OpRule("PReLU", ("PRELU",), min_runtime=13, params=(weights(1, "alpha"),), limitations=(
            always("Alpha must be 1-dimensional (one slope per channel).", lim.one_d_alpha),
        )),
        OpRule("Quantize", ("QUANTIZE",), min_runtime=13),
        OpRule("ReduceMax", ("REDUCE_MAX",), min_runtime=14, params=(index(1, "axis"),),
               limitations=(NOT_BATCH_REDUCTION,)),
        OpRule("ReduceMin", ("REDUCE_MIN",), min_runtime=14, params=(index(1, "axis"),),
               limitations=(NOT_BATCH_REDUCTION,)),
        OpRule("ReLU", ("RELU",)),
        OpRule("ReLU6", ("RELU6",)),
        OpRule("ReLUN1To1", ("RELU_N1_TO_1",)),
        OpRule("Reshape", ("RESHAPE",), params=(index(1, "shape"),), limitations=(
            always("Certain large reshapes may not be mapped.", lim.large_reshape, advisory=True,
                   threshold=True),
        )),
        OpRule("ResizeBilinear", ("RESIZE_BILINEAR",), params=(index(1, "size"),), limitations=(
            always("Input/output is a 3-dimensional image.", lim.image_3d_io),
            always("Upsampling from a single pixel ([1,1,C] to a larger image) stays on the CPU.",
                   lim.not_from_single_pixel, evidence=_DEEPLAB_POOLING),
            always(f"A scale factor of {lim.RESIZE_CPU_FACTOR} or more in y or x stays on the CPU.",
                   lim.factor_below_cpu_threshold, evidence=_DEEPLAB_FINAL, threshold=True),
            always("Between the factors seen mapped and seen on the CPU the compiler's threshold "
                   "is unknown.", lim.factor_between_known_cases, advisory=True,
                   evidence=_DEEPLAB_FINAL, threshold=True),
            always("May stay on the CPU to avoid precision loss.", lim.resize_precision,
                   advisory=True),
        )),
        OpRule("ResizeNearestNeighbor", ("RESIZE_NEAREST_NEIGHBOR",), params=(index(1, "size"),),
               limitations=(
            always("Input/output is a 3-dimensional image.", lim.image_3d_io),
            always("May stay on the CPU to avoid precision loss.", lim.resize_precision,
                   advisory=True),
        )),
        OpRule("Rsqrt", ("RSQRT",), min_runtime=14),
        OpRule("Slice", ("SLICE",), params=(index(1, "begin"), index(2, "size"))),
        OpRule("Softmax", ("SOFTMAX",), limitations=(
            always("Input must be 1-dimensional.", lim.one_d_input),
            always("At most 16,000 input elements.", lim.at_most_16000_elements),
        )),
        OpRule("SpaceToDepth", ("SPACE_TO_DEPTH",)),
        OpRule("Split", ("SPLIT",), params=(index(0, "axis"),), limitations=(
            always("No splitting in the batch dimension.", lim.splits_not_batch),
        )),
        OpRule("Squeeze", ("SQUEEZE",), limitations=(
            until(12, "Only squeezing leading 1s (no relayout).", lim.squeezes_leading_ones_only),
        )),
        OpRule("StridedSlice", ("STRIDED_SLICE",),
               params=(index(1, "begin"), index(2, "end"), index(3, "strides")), limitations=(
            always("All strides must be 1.", lim.strides_all_one),
            always("ellipsis_axis_mask must be 0.", lim.no_ellipsis_mask),
            always("new_axis_mask must be 0.", lim.no_new_axis_mask),
        )),
        OpRule("Sub", ("SUB",)),
        OpRule("Sum", ("SUM",), min_runtime=13, params=(index(1, "axis"),),
               limitations=(NOT_BATCH_REDUCTION,)),
        OpRule("SquaredDifference", ("SQUARED_DIFFERENCE",), min_runtime=14),
        OpRule("Tanh", ("TANH",)),
        OpRule("Tile", ("TILE",), min_runtime=14, params=(index(1, "multiples"),),
               evidence=_DEEPLAB_TILE, limitations=(
            always("Tiling only in y and x (the one case seen mapped).", lim.tiles_xy_only,
                   evidence=_DEEPLAB_TILE),
        )),
        OpRule("Transpose", ("TRANSPOSE",), min_runtime=14, params=(index(1, "perm"),)),
        OpRule("TransposeConv", ("TRANSPOSE_CONV",), min_runtime=13,
               params=(index(0, "output_shape"), weights(1, "filter"), bias(3))),
    ),
)
