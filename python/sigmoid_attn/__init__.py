"""sigmoid_attn: sigmoid attention for NVIDIA Hopper.

Triton kernels compiled ahead of time to sm_90 cubins, launched from a C++ torch op
(torch.ops.sigmoid_attn.forward); a C++ CPU implementation serves CPU tensors. Importing this
package never imports Triton.
"""

from ._version import __version__
from .functional import sigmoid_attention, sigmoid_attention_reference
from ._info import info
from .sdpa import scaled_dot_product_sigmoid_attention
from .varlen import sigmoid_attention_varlen, sigmoid_attention_varlen_reference
from . import nn
from ._ops import include_dir, library_path
from ._options import current_kernel_options, kernel_options

__all__ = ["__version__", "sigmoid_attention", "sigmoid_attention_reference",
           "sigmoid_attention_varlen", "sigmoid_attention_varlen_reference",
           "scaled_dot_product_sigmoid_attention", "info", "nn", "include_dir", "library_path",
           "kernel_options", "current_kernel_options"]
