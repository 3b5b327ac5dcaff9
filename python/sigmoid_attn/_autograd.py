"""Autograd for sigmoid attention: a torch.autograd.Function whose forward and backward are the
registered ops (torch.ops.sigmoid_attn.forward / .backward). Works in eager and under
torch.compile (no graph break).

Why not torch.library.register_autograd: that installs a Python kernel at the op's Autograd
dispatch key, which runs on every call, gradients or not, and doubled the host cost of a tiny
inference call on the H100 (15.6 -> 32.8 us). sigmoid_attention() takes this Function only when
an input requires grad; inference calls go straight to the C++ op.
"""

import torch

from ._ops import ops


class SigmoidAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(q, k, v, lens_q, lens_k, is_causal, scale, bias_value, bias_tensor, score_mod):
        return ops.forward(q, k, v, lens_q, lens_k, is_causal, scale, bias_value, bias_tensor,
                           score_mod)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, lens_q, lens_k, is_causal, scale, bias_value, bias_tensor, score_mod = inputs
        ctx.save_for_backward(q, k, v, lens_q, lens_k, bias_tensor, score_mod)
        ctx.is_causal, ctx.scale, ctx.bias_value = is_causal, scale, bias_value

    @staticmethod
    def backward(ctx, grad):
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


def needs_grad(q, k, v, score_mod) -> bool:
    # Attribute reads first: is_grad_enabled() is a C call, only needed when something
    # requires grad.
    return (q.requires_grad or k.requires_grad or v.requires_grad
            or (score_mod is not None and score_mod.requires_grad)) and torch.is_grad_enabled()
