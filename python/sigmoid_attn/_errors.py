"""Argument errors of the Python entry points: ValueError (a wrong value, shape or device) or
TypeError (a wrong dtype or Python type), each also a RuntimeError.

The checks themselves live in C++ (csrc/validate.cpp) and serve CPU, CUDA and Meta alike; a C++
exception crosses the stable ABI as a RuntimeError, and no other type can. So the entry points
call the op inside `try` (free on the success path since CPython 3.11's zero-cost exceptions) and
only when it raises, `argument_error` reads the message: every validation message starts with the
entry point's name ("sigmoid_attention: ", "sigmoid_attention_varlen: "), while driver, kernel
loading and allocation failures start with "sigmoid_attn: " or come from torch, and keep their
type. The new exception subclasses RuntimeError too, so `except RuntimeError` keeps working.

TorchScript cannot run this mapping: a scripted caller, and anyone calling
torch.ops.sigmoid_attn.* directly, gets the same messages as RuntimeError.
"""

from __future__ import annotations

import operator
import re
from typing import Optional

import torch

__all__ = ["SigmoidAttentionValueError", "SigmoidAttentionTypeError", "argument_error"]


class SigmoidAttentionValueError(ValueError, RuntimeError):
    """A wrong argument value, shape or device."""


class SigmoidAttentionTypeError(TypeError, RuntimeError):
    """A wrong dtype or Python type."""


_PREFIXES = ("sigmoid_attention: ", "sigmoid_attention_varlen: ")
# Messages with a validation prefix that are not about the caller's arguments.
_NOT_ARGUMENT = (": cannot ", ": unknown error")
# Messages that reject a dtype outright.
_DTYPE_PHRASES = ("must have the same dtype", "q, k, v must be float16", "unsupported CPU dtype")
_FLOATS = frozenset(("float16", "bfloat16", "float32", "float64"))
# "<name> must be int32 of shape [B]=[2], got int64 [2]": a dtype error when the dtype received
# differs, a shape error otherwise.
_DTYPE_AND_SHAPE = re.compile(r"must be (int32|floating point) of shape .*, got (\S+) \[[^\]]*\]$")
# torch's own argument parser, for a Python value the schema cannot take (scale="a").
_SCHEMA = re.compile(r"Expected a value of type '([^']+)' for argument '(\w+)' but instead "
                     r"found type '([^']+)'")
_SCHEMA_NAMES = {"sigmoid_bias_tensor": "sigmoid_bias"}


def _is_tensor(x) -> bool:
    return isinstance(x, torch.Tensor)


def _is_optional_tensor(x) -> bool:
    return x is None or isinstance(x, torch.Tensor)


def _is_index(x) -> bool:
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


# The arguments whose Python type the wrappers rely on before the op parses them.
_EXPECTED = {
    "q": ("a tensor", _is_tensor),
    "k": ("a tensor", _is_tensor),
    "v": ("a tensor", _is_tensor),
    "cu_seqlens_q": ("a tensor", _is_tensor),
    "cu_seqlens_k": ("a tensor", _is_tensor),
    "seq_lens_q": ("a tensor or None", _is_optional_tensor),
    "seq_lens_k": ("a tensor or None", _is_optional_tensor),
    "score_mod": ("a tensor or None", _is_optional_tensor),
    "max_seqlen_q": ("an int", _is_index),
    "max_seqlen_k": ("an int", _is_index),
}


def _classify(msg: str) -> Exception:
    if any(p in msg for p in _DTYPE_PHRASES):
        return SigmoidAttentionTypeError(msg)
    m = _DTYPE_AND_SHAPE.search(msg)
    if m is not None:
        want, got = m.groups()
        if (got != "int32") if want == "int32" else (got not in _FLOATS):
            return SigmoidAttentionTypeError(msg)
    return SigmoidAttentionValueError(msg)


def argument_error(e: BaseException, fn: str, **args) -> Optional[Exception]:
    """The ValueError / TypeError that `e`, raised by a call of entry point `fn` with `args`,
    stands for; None when it is not an argument error (re-raise `e` unchanged then)."""
    msg = str(e)
    if isinstance(e, RuntimeError):
        if msg.startswith(_PREFIXES):
            if isinstance(e, (ValueError, TypeError)) or any(p in msg for p in _NOT_ARGUMENT):
                return None  # already mapped, or not about the arguments
            return _classify(msg)
        m = _SCHEMA.search(msg)
        if m is not None:
            want, name, got = m.groups()
            name = _SCHEMA_NAMES.get(name, name)
            return SigmoidAttentionTypeError(f"{fn}: {name} must be of type {want}, got {got}")
    for name, value in args.items():
        expected = _EXPECTED.get(name)
        if expected is not None and not expected[1](value):
            return SigmoidAttentionTypeError(
                f"{fn}: {name} must be {expected[0]}, got {type(value).__name__}")
    return None
