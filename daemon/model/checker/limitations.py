"""The limitation checks named in the rule table, one small function each.

Each check takes an ``OpContext`` and returns None when the operator meets the
limitation, or a sentence naming the tensor and the value that break it. The
sentences end up verbatim in the report, so they say what a user can change.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._schema import schema
from ..tflite import enum_names
from .context import (
    EIGHT_BIT,
    OpContext,
    axis_role,
    dims,
    dtype_name,
    effective_rank,
    tensor_label,
)

Result = Optional[str]
# (axes, data shape) of an op whose axes are a constant input; None when they are not known.
Axes = Optional[tuple[list[int], list[int]]]

_ACTIVATIONS = enum_names(schema.ActivationFunctionType)
_WEIGHTS_FORMATS = enum_names(schema.FullyConnectedOptionsWeightsFormat)

SOFTMAX_MAX_ELEMENTS = 16_000
# Coral only says "some large reshapes"; this threshold is edgetpud's own heuristic.
LARGE_RESHAPE_ELEMENTS = 1 << 20
# Seen on the CPU at x15.5 (33 -> 513) and mapped at x1 by edgetpu_compiler 16; no document
# gives the real threshold, so this is the smallest factor seen left on the CPU.
RESIZE_CPU_FACTOR = 15.5


# --------------------------------------------------------------- general rules
def eight_bit(ctx: OpContext) -> Result:
    """Tensor parameters are int8/uint8; int32 biases and integer index inputs are parameters, not data."""
    params = {p.position: p for p in getattr(ctx.rule, "params", ())}
    tensors = [("input", pos, t, params.get(pos)) for pos, t in ctx.present_inputs()]
    tensors += [("output", pos, t, None) for pos, t in ctx.present_outputs()]
    for where, pos, t, param in tensors:
        dtype = np.dtype(t.dtype)
        kind = param.kind if param else None
        if kind == "index" or dtype in EIGHT_BIT:
            continue
        if kind == "bias" and dtype == np.int32:
            continue
        if kind == "state" and dtype == np.int16:
            ctx.note(
                "int16-lstm-state",
                f"{ctx.op} keeps its state {tensor_label(t)} in int16; Coral's documentation asks "
                "for 8-bit tensors, but the compiler maps integer LSTMs with an int16 cell state "
                "(keras_lstm_mnist_ptq_edgetpu.tflite maps fully)",
            )
            continue
        role = f"{param.name} tensor" if param else "tensor"
        return (
            f"{role} {tensor_label(t)} ({where} {pos}) is {dtype_name(dtype)}; "
            "the Edge TPU needs int8 or uint8 tensors"
            + (" (int32 for biases)" if kind == "bias" else "")
        )
    return None


def static_shape(ctx: OpContext) -> Result:
    """A -1 in a shape signature means the size is only known at run time."""
    for pos, t in ctx.present_inputs() + ctx.present_outputs():
        if t.is_dynamic or any(d < 0 for d in t.shape):
            shown = t.shape_signature if t.is_dynamic else t.shape
            return f"tensor {tensor_label(t)} has a dynamic shape: shape_signature {dims(shown)}"
    return None


def constant_parameters(ctx: OpContext) -> Result:
    """Filters, biases, axes and other parameters must be baked into the model."""
    for param in getattr(ctx.rule, "params", ()):
        if param.kind == "state":
            continue
        t = ctx.input(param.position)
        if t is None or t.is_constant:
            continue
        return (
            f"{param.name} tensor {tensor_label(t)} (input {param.position}) is not constant: "
            f"{ctx.origin(t)}"
        )
    return None


def at_most_3d(ctx: OpContext) -> Result:
    """Activations may only have size > 1 in their 3 innermost dimensions.

    Constant weights (a conv filter is [O,H,W,I]) are exempt: the compiler maps
    them, so the report notes the exemption rather than applying it silently.
    """
    for pos, t in ctx.present_inputs() + ctx.present_outputs():
        shape = ctx.shape(t)
        if len(shape) <= 3 or all(d <= 1 for d in shape[:-3]):
            continue
        if t.is_constant:
            ctx.note(
                "rank-weights",
                "constant weights such as "
                f"{tensor_label(t)} {dims(shape)} have size > 1 outside the 3 innermost "
                "dimensions; the rank rule is applied to activations only, because the "
                "compiler maps such weights (every compiled Coral CNN has them)",
            )
            continue
        return (
            f"tensor {tensor_label(t)} has {len(shape)} dimensions and size > 1 outside the "
            f"3 innermost: {dims(shape)}"
        )
    return None


# ---------------------------------------------------------------- op-specific
def no_fused_activation(ctx: OpContext) -> Result:
    """Pooling and concatenation cannot fuse an activation on the Edge TPU."""
    act = int(ctx.option("fusedActivationFunction", 0) or 0)
    if act:
        return f"fused activation {_ACTIVATIONS.get(act, act)} (fused_activation_function={act})"
    return None


def constant_only_zeros_pair(ctx: OpContext) -> Result:
    """A constant may be one of exactly 2 inputs and must be all zeros (in real values)."""
    inputs = ctx.present_inputs()
    consts = [(pos, t) for pos, t in inputs if t.is_constant]
    if not consts:
        return None
    pos, t = consts[0]
    if len(inputs) != 2:
        return (
            f"constant input {tensor_label(t)} (input {pos}) is one of {len(inputs)} inputs; "
            "a constant is allowed only as one of exactly 2 inputs"
        )
    if len(consts) == 2:
        return "both inputs are constant; only one of the 2 inputs may be constant"
    data = ctx.values(t)
    if data is None:
        return f"constant input {tensor_label(t)} (input {pos}) has no data to check for zeros"
    zero = int(t.zero_point or 0) if np.dtype(t.dtype).kind in "iu" else 0
    flat = np.asarray(data).reshape(-1)
    nonzero = int(np.count_nonzero(flat != zero))
    if nonzero:
        return (
            f"constant input {tensor_label(t)} (input {pos}) is not all zeros: "
            f"{nonzero} of {flat.size} elements are non-zero"
        )
    return None


def _dilation(ctx: OpContext) -> tuple[int, int]:
    return (
        int(ctx.option("dilationHFactor", 1) or 1),
        int(ctx.option("dilationWFactor", 1) or 1),
    )


def same_dilation_xy(ctx: OpContext) -> Result:
    """The Edge TPU dilates x and y by the same factor."""
    h, w = _dilation(ctx)
    if h != w:
        return f"dilation differs in x and y: dilation_w_factor={w}, dilation_h_factor={h}"
    return None


def no_dilation(ctx: OpContext) -> Result:
    """Runtime 12 and older map only undilated depthwise convolutions."""
    h, w = _dilation(ctx)
    if h != 1 or w != 1:
        return f"dilation is {h}x{w} (dilation_h_factor={h}, dilation_w_factor={w}); it must be 1x1"
    return None


def default_weights_format(ctx: OpContext) -> Result:
    """Shuffled weight layouts are a CPU kernel optimisation the compiler does not take."""
    fmt = int(ctx.option("weightsFormat", 0) or 0)
    if fmt:
        return f"weights_format is {_WEIGHTS_FORMATS.get(fmt, fmt)}; only DEFAULT is mapped"
    return None


def _one_d(ctx: OpContext, t, what: str) -> Result:
    """Shared by the '1-D' limitations: size > 1 in at most one dimension."""
    if t is None:
        return None
    shape = ctx.shape(t)
    k = effective_rank(shape)
    if k > 1:
        return f"{what} {tensor_label(t)} is {dims(shape)}: {k} dimensions with size > 1; it must be 1-D"
    if len(shape) > 1:
        ctx.note(
            f"effective-1d:{ctx.op}",
            f"Coral's documentation asks for a 1-D {what} of {ctx.op}; {tensor_label(t)} is "
            f"{dims(shape)}, with size > 1 in one dimension only, and the compiler maps that "
            "(compiled Coral classifiers do)",
        )
    return None


def one_d_output(ctx: OpContext) -> Result:
    """FullyConnected maps a single vector output (batch 1)."""
    return _one_d(ctx, ctx.output(0), "output")


def one_d_input(ctx: OpContext) -> Result:
    """Softmax maps a single vector input (batch 1)."""
    return _one_d(ctx, ctx.input(0), "input")


def one_d_alpha(ctx: OpContext) -> Result:
    """PReLU's alpha holds one slope per channel."""
    return _one_d(ctx, ctx.input(1), "alpha")


def at_most_16000_elements(ctx: OpContext) -> Result:
    """Softmax's input must fit the Edge TPU's softmax unit."""
    t = ctx.input(0)
    n = int(np.prod(ctx.shape(t))) if t is not None else 0
    if n > SOFTMAX_MAX_ELEMENTS:
        return f"input {tensor_label(t)} has {n:,} elements, more than {SOFTMAX_MAX_ELEMENTS:,}"
    return None


def unidirectional_only(ctx: OpContext) -> Result:
    """Only the unidirectional sequence LSTM has an Edge TPU kernel."""
    if ctx.op.startswith("BIDIRECTIONAL"):
        return f"{ctx.op} is bidirectional; only unidirectional LSTMs are mapped"
    return None


def _axes(ctx: OpContext, axis_input: int, data_input: int) -> Axes:
    """(normalized axes, data shape) for ops that take their axes as a constant input."""
    values = ctx.int_values(axis_input)
    data = ctx.input(data_input)
    if values is None or data is None:
        return None
    shape = ctx.shape(data)
    rank = len(shape)
    return sorted({a + rank if a < 0 else a for a in values}), shape


def _xy_only(ctx: OpContext, found: Axes, verb: str, rule: str) -> Result:
    """Shared by the runtime-12 limitations that allow only the y and x axes of input 0."""
    if found is None:
        return None
    axes, shape = found
    if not {axis_role(a, len(shape)) for a in axes} <= {"x", "y"}:
        described = ", ".join(f"{a} ({axis_role(a, len(shape))})" for a in axes)
        return f"{verb} axes {described} of {tensor_label(ctx.input(0))} {dims(shape)}; {rule}"
    return None


def reduces_xy_only(ctx: OpContext) -> Result:
    """Runtime 12 and older reduce only over y and x (global pooling)."""
    return _xy_only(ctx, _axes(ctx, 1, 0), "reduces", "only x/y reductions are mapped")


def _not_batch(found: Axes, verb: str, t) -> Result:
    """Shared by the 'not in the batch dimension' limitations."""
    if found is None:
        return None
    axes, shape = found
    bad = [a for a in axes if axis_role(a, len(shape)) in ("batch", "outer")]
    if bad:
        return (
            f"{verb} axis {bad[0]} ({axis_role(bad[0], len(shape))}) of {tensor_label(t)} "
            f"{dims(shape)}; the batch dimension is not mapped"
        )
    return None


def reduces_not_batch(ctx: OpContext) -> Result:
    """Reductions over the batch dimension are not mapped."""
    return _not_batch(_axes(ctx, 1, 0), "reduces", ctx.input(0))


def z_reduction_multiple_of_4(ctx: OpContext) -> Result:
    """A reduction over z (channels) needs a channel count that is a multiple of 4."""
    found = _axes(ctx, 1, 0)
    if found is None:
        return None
    axes, shape = found
    if shape and (len(shape) - 1) in axes and shape[-1] % 4:
        return (
            f"reduces z (axis {len(shape) - 1}) of {tensor_label(ctx.input(0))} {dims(shape)}, "
            f"and z = {shape[-1]} is not a multiple of 4"
        )
    return None


def splits_not_batch(ctx: OpContext) -> Result:
    """Split takes its axis as input 0 and its data as input 1."""
    return _not_batch(_axes(ctx, 0, 1), "splits along", ctx.input(1))


def packs_not_batch(ctx: OpContext) -> Result:
    """Pack's axis (an option) indexes the output, which has one dimension more."""
    out = ctx.output(0)
    if out is None:
        return None
    shape = ctx.shape(out)
    axis = int(ctx.option("axis", 0) or 0)
    axis = axis + len(shape) if axis < 0 else axis
    return _not_batch(([axis], shape), "packs along", out)


def _padded_axes(ctx: OpContext) -> Axes:
    values = ctx.int_values(1)
    data = ctx.input(0)
    if values is None or data is None:
        return None
    shape = ctx.shape(data)
    pairs = np.asarray(values).reshape(-1, 2)
    return [i for i, (lo, hi) in enumerate(pairs) if lo or hi], shape


def pads_xy_only(ctx: OpContext) -> Result:
    """Runtime 12 and older pad only in y and x."""
    return _xy_only(ctx, _padded_axes(ctx), "pads", "only x/y padding is mapped")


def pads_not_batch(ctx: OpContext) -> Result:
    """Padding the batch dimension is not mapped."""
    return _not_batch(_padded_axes(ctx), "pads", ctx.input(0))


def large_reshape(ctx: OpContext) -> Result:
    """Advisory: Coral warns that some large reshapes stay on the CPU."""
    t = ctx.input(0)
    n = int(np.prod(ctx.shape(t))) if t is not None else 0
    if n > LARGE_RESHAPE_ELEMENTS:
        return (
            f"reshapes {tensor_label(t)} with {n:,} elements; the compiler may leave large "
            "reshapes on the CPU"
        )
    return None


def image_3d_io(ctx: OpContext) -> Result:
    """Resizes work on one image: [H,W,C] or [1,H,W,C]."""
    for where, t in (("input", ctx.input(0)), ("output", ctx.output(0))):
        if t is None:
            continue
        shape = ctx.shape(t)
        if len(shape) == 3 or (len(shape) == 4 and shape[0] == 1):
            continue
        return f"{where} {tensor_label(t)} is {dims(shape)}; it must be a 3-D image ([H,W,C] or [1,H,W,C])"
    return None


def _image_hw(ctx: OpContext, t) -> Optional[tuple[int, int]]:
    """(height, width) of an [H,W,C] or [N,H,W,C] image tensor, or None for other shapes."""
    if t is None:
        return None
    shape = ctx.shape(t)
    if len(shape) not in (3, 4):
        return None
    return shape[-3], shape[-2]


def resize_factors(ctx: OpContext) -> Optional[tuple[float, float]]:
    """(y, x) scale factors of a resize, output size over input size; None when not an image."""
    src, dst = _image_hw(ctx, ctx.input(0)), _image_hw(ctx, ctx.output(0))
    if src is None or dst is None or 0 in src:
        return None
    return dst[0] / src[0], dst[1] / src[1]


def _resize_shapes(ctx: OpContext) -> str:
    return f"{dims(ctx.shape(ctx.input(0)))} -> {dims(ctx.shape(ctx.output(0)))}"


def not_from_single_pixel(ctx: OpContext) -> Result:
    """Observed: the compiler keeps an upsampling of a 1x1 image (a broadcast) on the CPU."""
    src, dst = _image_hw(ctx, ctx.input(0)), _image_hw(ctx, ctx.output(0))
    if src != (1, 1) or dst is None or dst == (1, 1):
        return None
    return (
        f"upsamples a single pixel: {tensor_label(ctx.input(0))} {_resize_shapes(ctx)}; "
        "edgetpu_compiler 16 left such a resize on the CPU"
    )


def factor_below_cpu_threshold(ctx: OpContext) -> Result:
    """Observed: a very large upsampling factor (x15.5) stays on the CPU."""
    factors = resize_factors(ctx)
    if factors is None or max(factors) < RESIZE_CPU_FACTOR:
        return None
    return (
        f"scales {tensor_label(ctx.input(0))} {_resize_shapes(ctx)} by "
        f"{_factor_text(factors)}; edgetpu_compiler 16 left a x{RESIZE_CPU_FACTOR} resize on the "
        "CPU, and no document gives the threshold, so the prediction may differ"
    )


def factor_between_known_cases(ctx: OpContext) -> Result:
    """Advisory: a factor between x1 (seen mapped) and the CPU threshold is a guess either way."""
    factors = resize_factors(ctx)
    if factors is None or factors == (1.0, 1.0) or max(factors) >= RESIZE_CPU_FACTOR:
        return None
    if _image_hw(ctx, ctx.input(0)) == (1, 1):
        return None
    return (
        f"{ctx.op} scales {tensor_label(ctx.input(0))} {_resize_shapes(ctx)} by "
        f"{_factor_text(factors)}; predicted mapped, but the compiler's threshold (seen: x1 "
        f"mapped, x{RESIZE_CPU_FACTOR} on the CPU) is not documented, so the prediction may differ"
    )


def _factor_text(factors: tuple[float, float]) -> str:
    y, x = factors
    return f"x{y:g}" if y == x else f"x{y:g} in y and x{x:g} in x"


def tiles_xy_only(ctx: OpContext) -> Result:
    """Observed: TILE was mapped when it repeats only in y and x; batch and z tiling are unseen."""
    multiples = ctx.int_values(1)
    if multiples is None:
        return None
    rank = len(multiples)
    bad = [a for a, m in enumerate(multiples) if m != 1 and axis_role(a, rank) not in ("x", "y")]
    if bad:
        a = bad[0]
        return (
            f"tiles axis {a} ({axis_role(a, rank)}) of {tensor_label(ctx.input(0))} "
            f"{multiples[a]} times (multiples {dims(multiples)}); only y/x tiling was seen mapped"
        )
    return None


def resize_precision(ctx: OpContext) -> Result:
    """Advisory: the compiler may keep a resize on the CPU to avoid precision loss."""
    return (
        f"the compiler may keep {ctx.op} on the CPU to avoid precision loss; "
        "compile the model to confirm"
    )


def squeezes_leading_ones_only(ctx: OpContext) -> Result:
    """Runtime 12 and older squeeze only leading 1s, which needs no relayout."""
    t = ctx.input(0)
    if t is None:
        return None
    shape = ctx.shape(t)
    squeeze = ctx.option("squeezeDims", None)
    if squeeze is None or len(squeeze) == 0:
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:
        axes = sorted({int(a) + len(shape) if int(a) < 0 else int(a) for a in squeeze})
    if axes != list(range(len(axes))):
        return (
            f"squeezes axes {axes} of {tensor_label(t)} {dims(shape)}; only leading 1s "
            "(no relayout) are mapped"
        )
    return None


def strides_all_one(ctx: OpContext) -> Result:
    """Strided slices map only with stride 1 everywhere."""
    strides = ctx.int_values(3)
    if strides is not None and any(s != 1 for s in strides):
        return f"strides are {dims(strides)}; only stride 1 is mapped"
    return None


def no_ellipsis_mask(ctx: OpContext) -> Result:
    """An ellipsis in a strided slice is not mapped."""
    mask = int(ctx.option("ellipsisMask", 0) or 0)
    return f"ellipsis_mask is {mask}; it must be 0" if mask else None


def no_new_axis_mask(ctx: OpContext) -> Result:
    """A strided slice that inserts axes is not mapped."""
    mask = int(ctx.option("newAxisMask", 0) or 0)
    return f"new_axis_mask is {mask}; it must be 0" if mask else None
