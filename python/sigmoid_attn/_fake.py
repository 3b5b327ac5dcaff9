"""Fake (shape) implementations of the ops for torch.compile and torch.export.

They run on fake tensors, which know the device they stand for, and first run the op's C++
validation as that device would (torch.ops.sigmoid_attn._check_*: dtypes, grid limits and, on
CUDA, a compiled kernel for the call), so a trace rejects exactly what the device would reject,
with the same message. A C++ Meta kernel could not: it sees meta tensors."""

import torch

_CHECK = torch.ops.sigmoid_attn


def _device_code(t: torch.Tensor) -> int:
    return {"cpu": 0, "cuda": 1}.get(t.device.type, 2)


def _grad_mod(q, score_mod, shape):
    """score_mod's gradient: float32 (float64 for float64 inputs) of shape, or empty."""
    if score_mod is None:
        return q.new_empty((0,), dtype=torch.float32)
    return q.new_empty(shape, dtype=torch.float64 if q.dtype == torch.float64 else torch.float32)


@torch.library.register_fake("sigmoid_attn::forward")
def _forward(q, k, v, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
             sigmoid_bias=None, sigmoid_bias_tensor=None, score_mod=None):
    _CHECK._check_forward(q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias,
                          sigmoid_bias_tensor, score_mod, _device_code(q))
    return q.new_empty(q.shape)


@torch.library.register_fake("sigmoid_attn::forward.plain")
def _forward_plain(q, k, v, is_causal=False):
    _CHECK._check_forward(q, k, v, None, None, is_causal, None, None, None, None,
                          _device_code(q))
    return q.new_empty(q.shape)


@torch.library.register_fake("sigmoid_attn::backward")
def _backward(grad_out, q, k, v, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
              sigmoid_bias=None, sigmoid_bias_tensor=None, score_mod=None, deterministic=False):
    _CHECK._check_backward(grad_out, q, k, v, seq_lens_q, seq_lens_k, is_causal, scale,
                           sigmoid_bias, sigmoid_bias_tensor, score_mod, deterministic,
                           _device_code(q))
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            _grad_mod(q, score_mod, (q.shape[0], k.shape[1])))


@torch.library.register_fake("sigmoid_attn::forward_varlen")
def _forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                    is_causal=False, scale=None, sigmoid_bias=None, sigmoid_bias_tensor=None,
                    score_mod=None):
    _CHECK._check_forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                 is_causal, scale, sigmoid_bias, sigmoid_bias_tensor, score_mod,
                                 _device_code(q))
    return q.new_empty(q.shape)


@torch.library.register_fake("sigmoid_attn::backward_varlen")
def _backward_varlen(grad_out, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     is_causal=False, scale=None, sigmoid_bias=None, sigmoid_bias_tensor=None,
                     score_mod=None, deterministic=False):
    _CHECK._check_backward_varlen(grad_out, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                  max_seqlen_k, is_causal, scale, sigmoid_bias,
                                  sigmoid_bias_tensor, score_mod, deterministic, _device_code(q))
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            _grad_mod(q, score_mod, (k.shape[0],)))
