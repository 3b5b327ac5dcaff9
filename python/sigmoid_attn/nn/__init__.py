"""torch.nn modules built on sigmoid attention."""

from .attention import SigmoidMultiheadAttention

__all__ = ["SigmoidMultiheadAttention"]
