"""Drop-in modules for code written against other sigmoid attention packages.

    from sigmoid_attn.compat import triton_sigmoid   # instead of: import triton_sigmoid

Each module has the other package's public names, signatures, defaults and semantics, and runs
this library's kernels (CUDA) or its C++ CPU path.
"""

from . import triton_sigmoid

__all__ = ["triton_sigmoid"]
