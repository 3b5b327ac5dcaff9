"""Loads the compiled ops library (registers torch.ops.sigmoid_attn.*). No Triton here."""

import os

import torch

from . import _library

LIBRARY_PATH = _library.locate()
torch.ops.load_library(LIBRARY_PATH)
_library.bind(LIBRARY_PATH)
from . import _fake  # noqa: E402,F401  (the ops' shapes for torch.compile / torch.export)

ops = torch.ops.sigmoid_attn


def library_path():
    """The ops library (libsigmoid_attn_ops.so): C++ services link it, or dlopen it to register
    torch.ops.sigmoid_attn.* for TorchScript and AOTInductor models."""
    return LIBRARY_PATH


def include_dir():
    """The directory holding the C/C++ API headers (sigmoid_attn/sigmoid_attn.h, which wraps
    sigmoid_attn/c_api.h): installed next to the ops library; the source tree's include/ in a
    checkout whose build put them elsewhere."""
    here = os.path.dirname(LIBRARY_PATH)
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include")
    for d in (os.path.join(here, "include"), os.path.normpath(source)):
        if os.path.isfile(os.path.join(d, "sigmoid_attn", "sigmoid_attn.h")):
            return d
    raise FileNotFoundError(f"sigmoid_attn: the C++ API headers are not installed next to {here}")
