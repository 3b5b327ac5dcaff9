"""Autograd for torch.ops.sigmoid_attn.forward: its backward is another registered op, so
eager, torch.compile (no graph break) and torch.export all differentiate through it."""

import torch

from ._ops import ops


def _setup_context(ctx, inputs, output):
    q, k, v, lens_q, lens_k, is_causal, scale, bias_value, bias_tensor, score_mod = inputs
    ctx.save_for_backward(q, k, v, lens_q, lens_k, bias_tensor, score_mod)
    ctx.is_causal, ctx.scale, ctx.bias_value = is_causal, scale, bias_value


def _backward(ctx, grad):
    q, k, v, lens_q, lens_k, bias_tensor, score_mod = ctx.saved_tensors
    if grad.stride(-1) != 1:  # e.g. the expanded gradient of out.sum()
        grad = grad.contiguous()
    dq, dk, dv, dmod = ops.backward(grad, q, k, v, lens_q, lens_k, ctx.is_causal, ctx.scale,
                                    ctx.bias_value, bias_tensor, score_mod)
    dscore_mod = None
    if score_mod is not None and ctx.needs_input_grad[9]:
        dscore_mod = dmod.to(score_mod.dtype)
    # Lengths and the bias tensor get no gradient.
    return dq, dk, dv, None, None, None, None, None, None, dscore_mod


torch.library.register_autograd("sigmoid_attn::forward", _backward, setup_context=_setup_context)
