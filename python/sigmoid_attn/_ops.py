"""Loads the compiled ops library (registers torch.ops.sigmoid_attn.*). No Triton here."""

import os

import torch

from . import _C  # built next to libsigmoid_attn_ops.so in the installed package

LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(_C.__file__)), "libsigmoid_attn_ops.so")
torch.ops.load_library(LIBRARY_PATH)
_C.bind(LIBRARY_PATH)

ops = torch.ops.sigmoid_attn
