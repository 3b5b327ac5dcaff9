"""Autograd of the forward ops, registered on the ops themselves (torch.library.register_autograd).

Every way of calling a forward op gets its gradient: the Python API, `torch.ops.sigmoid_attn.*`
called directly, TorchScript modules run from Python, and torch.compile, which traces the op
with its registered backward (no autograd.Function, so the same tensor may be passed for both
lengths, or for q, k and v). Differentiable: q, k, v, score_mod and the sigmoid_bias tensor
(its gradient is the sum of dS over each sequence's valid scores). Lengths get none. A second
derivative raises: the backward op has no autograd of its own.

The registered kernel is Python and runs at the Autograd dispatch key on every call that reaches
it, gradients or not; on the H100 that doubled a tiny inference call's host cost. So the Python
API calls the op below the Autograd key when nothing needs a gradient (`below_autograd`), and
only calls that need one pay for the kernel.

Without Python (libtorch), the ops have no autograd: a C++ caller that needs gradients calls
`backward` / `backward_varlen` itself.

Determinism: the backward ops take `deterministic`, which keeps them off the kernel that sums dQ
by fp32 atomics (the Gluon backward) whatever the dispatch switches say.
The ops library cannot read torch's deterministic mode (the stable ABI has no query for it), so
every backward here passes torch.are_deterministic_algorithms_enabled(); under torch.compile the
value is read when the backward is traced, and Dynamo's global-state guard retraces when the
mode changes.
"""

import torch

from ._ops import ops

below_autograd = torch._C._AutoDispatchBelowAutograd


def needs_grad(q, k, v, score_mod, bias_tensor=None) -> bool:
    # Attribute reads first: is_grad_enabled() is a C call, only needed when something
    # requires grad.
    return (q.requires_grad or k.requires_grad or v.requires_grad
            or (score_mod is not None and score_mod.requires_grad)
            or (bias_tensor is not None and bias_tensor.requires_grad)) and torch.is_grad_enabled()


def _no_double_backward(*tensors):
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError("sigmoid_attention: second derivatives are not supported (the backward "
                           "of sigmoid attention is not differentiable here); call backward "
                           "without create_graph=True")


def _needs(ctx, i):
    # needs_input_grad covers the arguments the caller passed (schema defaults may be left out)
    return i < len(ctx.needs_input_grad) and ctx.needs_input_grad[i]


def _deterministic() -> bool:
    # (the backward op's flag: bitwise-reproducible kernels only; see the module docstring)
    return torch.are_deterministic_algorithms_enabled()


def _grad_out(grad):
    return grad if grad.stride(-1) == 1 else grad.contiguous()  # e.g. out.sum()'s expanded grad


def _score_mod_for_bias(score_mod, bias_tensor, needs, shape, device):
    """The backward op sums dS per key only when it has a score_mod: give it zeros when just
    the bias tensor's gradient is wanted."""
    if score_mod is None and bias_tensor is not None and needs:
        return torch.zeros(shape, dtype=torch.float32, device=device)
    return score_mod


# --- padded batches: forward(q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, sigmoid_bias,
#     sigmoid_bias_tensor, score_mod) and forward.plain(q, k, v, is_causal) ---

def _setup_dense(ctx, inputs, output):
    q, k, v, lens_q, lens_k, is_causal, scale, bias_value, bias_tensor, score_mod = inputs
    ctx.save_for_backward(q, k, v, lens_q, lens_k, bias_tensor, score_mod)
    ctx.is_causal, ctx.scale, ctx.bias_value = is_causal, scale, bias_value


def _backward_dense(ctx, grad):
    q, k, v, lens_q, lens_k, bias_tensor, score_mod = ctx.saved_tensors
    _no_double_backward(grad, q, k, v)
    need_bias = _needs(ctx, 8)
    mod = _score_mod_for_bias(score_mod, bias_tensor, need_bias, (k.shape[0], k.shape[1]),
                              k.device)
    dq, dk, dv, dmod = ops.backward(_grad_out(grad), q, k, v, lens_q, lens_k, ctx.is_causal,
                                    ctx.scale, ctx.bias_value, bias_tensor, mod,
                                    deterministic=_deterministic())
    dbias = dmod.sum(-1).to(bias_tensor.dtype) if need_bias else None
    dscore_mod = dmod.to(score_mod.dtype) if _needs(ctx, 9) else None
    return dq, dk, dv, None, None, None, None, None, dbias, dscore_mod


def _setup_plain(ctx, inputs, output):
    q, k, v, is_causal = inputs
    ctx.save_for_backward(q, k, v)
    ctx.is_causal = is_causal


def _backward_plain(ctx, grad):
    q, k, v = ctx.saved_tensors
    _no_double_backward(grad, q, k, v)
    dq, dk, dv, _ = ops.backward(_grad_out(grad), q, k, v, None, None, ctx.is_causal,
                                 deterministic=_deterministic())
    return dq, dk, dv, None


# --- packed batches: forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
#     max_seqlen_k, is_causal, scale, sigmoid_bias, sigmoid_bias_tensor, score_mod) ---

def _setup_varlen(ctx, inputs, output):
    (q, k, v, cu_q, cu_k, max_q, max_k, is_causal, scale, bias_value, bias_tensor,
     score_mod) = inputs
    ctx.save_for_backward(q, k, v, cu_q, cu_k, bias_tensor, score_mod)
    ctx.args = (max_q, max_k, is_causal, scale, bias_value)


def _backward_varlen(ctx, grad):
    q, k, v, cu_q, cu_k, bias_tensor, score_mod = ctx.saved_tensors
    max_q, max_k, is_causal, scale, bias_value = ctx.args
    _no_double_backward(grad, q, k, v)
    need_bias = _needs(ctx, 10)
    mod = _score_mod_for_bias(score_mod, bias_tensor, need_bias, (k.shape[0],), k.device)
    dq, dk, dv, dmod = ops.backward_varlen(_grad_out(grad), q, k, v, cu_q, cu_k, max_q, max_k,
                                           is_causal, scale, bias_value, bias_tensor, mod,
                                           deterministic=_deterministic())
    dbias = None
    if need_bias:  # dmod is per packed key: sum each sequence's keys (the tail's are zero)
        n = cu_k.shape[0] - 1
        keys = torch.arange(k.shape[0], device=k.device)
        seq = torch.searchsorted(cu_k[1:].to(torch.int64), keys, right=True).clamp_(max=n - 1)
        dbias = torch.zeros(n, dtype=dmod.dtype, device=k.device).index_add_(0, seq, dmod)
        dbias = dbias.to(bias_tensor.dtype)
    dscore_mod = dmod.to(score_mod.dtype) if _needs(ctx, 11) else None
    return (dq, dk, dv, None, None, None, None, None, None, None, dbias, dscore_mod)


torch.library.register_autograd("sigmoid_attn::forward", _backward_dense,
                                setup_context=_setup_dense)
torch.library.register_autograd("sigmoid_attn::forward.plain", _backward_plain,
                                setup_context=_setup_plain)
torch.library.register_autograd("sigmoid_attn::forward_varlen", _backward_varlen,
                                setup_context=_setup_varlen)
