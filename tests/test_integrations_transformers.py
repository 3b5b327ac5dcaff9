"""Hugging Face transformers integration: a tiny random BERT loaded with
attn_implementation="sigmoid" against the same weights run by a float64 sigmoid attention written
here, padding invariance, gradients, and that the switch from softmax really happened."""

import subprocess
import sys

import pytest
import torch
from conftest import rel_err

transformers = pytest.importorskip("transformers")
from sigmoid_attn import sigmoid_attention_reference  # noqa: E402
from sigmoid_attn.integrations import transformers as sigmoid_hf  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, create_bidirectional_mask, sdpa_mask  # noqa: E402

REF = "sigmoid_float64_reference"
# Whole-model tolerances on ||out - ref|| / ||ref||: two layers of attention, LayerNorm and GELU
# on top of the kernel's own error (REL_TOL in conftest.py).
MODEL_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2}
DEVICES = [
    pytest.param("cpu", torch.float32, 64, id="cpu-fp32-d16"),
    # The CUDA kernels take head dims 32..256: hidden 128 over 4 heads.
    pytest.param("cuda", torch.bfloat16, 128, id="cuda-bf16-d32", marks=pytest.mark.gpu),
]


def reference_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                        **kwargs):
    """sigmoid(Q Kᵀ scaling - log(attended keys)) V in float64 from transformers' dense mask."""
    q, k, v = query.double(), key.double(), value.double()
    s = q @ k.transpose(-1, -2) * scaling
    keep = torch.ones_like(s, dtype=torch.bool) if attention_mask is None else attention_mask
    n = keep.sum(-1, keepdim=True).clamp_min(1).double()
    p = torch.sigmoid(s - torch.log(n)) * keep
    return (p @ v).transpose(1, 2).contiguous(), None


@pytest.fixture(scope="module", autouse=True)
def registered():
    sigmoid_hf.register()
    transformers.AttentionInterface.register(REF, reference_attention)
    AttentionMaskInterface.register(REF, sdpa_mask)  # dense boolean [B, 1, Tq, Tk] masks


def save_tiny_bert(path, hidden: int) -> None:
    cfg = BertConfig(vocab_size=101, hidden_size=hidden, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=2 * hidden,
                     max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0,
                     # Large enough weights for scores of O(1): at BERT's default 0.02 every
                     # score is ~0, where sigmoid with bias -log(n) and softmax nearly agree.
                     initializer_range=0.3)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)


def batch(device, lengths=(20, 13, 5), vocab=101):
    g = torch.Generator().manual_seed(1)
    B, T = len(lengths), max(lengths)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.arange(T).view(1, T) < torch.tensor(lengths).view(B, 1)
    return ids.masked_fill(~mask, 0).to(device), mask.long().to(device)


def load(path, impl, device, dtype):
    model = BertModel.from_pretrained(path, attn_implementation=impl)
    assert model.config._attn_implementation == impl
    return model.to(device, dtype).eval()


def test_import_sigmoid_attn_does_not_import_transformers():
    code = ("import sys, sigmoid_attn, sigmoid_attn.integrations.transformers; "
            "assert 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_is_idempotent_and_padding_becomes_a_key_mask():
    sigmoid_hf.register()
    sigmoid_hf.register()
    assert transformers.AttentionInterface._global_mapping["sigmoid"] is \
        sigmoid_hf.sigmoid_attention_forward
    cfg = BertConfig(hidden_size=64, num_attention_heads=4, attn_implementation="sigmoid")
    ids, mask = batch("cpu")
    embeds = torch.zeros(*ids.shape, 64)
    built = create_bidirectional_mask(cfg, embeds, mask)
    assert built.shape == (3, 1, 1, 20) and built.dtype == torch.bool  # no dense [B,1,Tq,Tk]
    assert torch.equal(built[:, 0, 0], mask.bool())
    full = torch.ones_like(mask)
    assert create_bidirectional_mask(cfg, embeds, None) is None
    assert create_bidirectional_mask(cfg, embeds, full).all()


@pytest.mark.parametrize("device,dtype,hidden", DEVICES)
def test_bert_matches_float64_reference_and_ignores_padding(tmp_path, device, dtype, hidden):
    save_tiny_bert(tmp_path, hidden)
    model = load(tmp_path, "sigmoid", device, dtype)
    ref = load(tmp_path, REF, device, torch.float64)
    ids, mask = batch(device)
    valid = mask.bool()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        assert rel_err(out[valid], expected[valid]) < MODEL_TOL[dtype]
        # Other tokens in the padding change nothing in the valid positions...
        noisy = torch.where(valid, ids, torch.randint_like(ids, 1, 101))
        out2 = model(input_ids=noisy, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(out2[valid], out[valid], rtol=0, atol=0)
        # ...and each sequence run alone, unpadded and unmasked, gives the same result.
        for b, n in enumerate(mask.sum(1).tolist()):
            alone = model(input_ids=ids[b:b + 1, :n]).last_hidden_state[0]
            assert rel_err(alone, out[b, :n]) < MODEL_TOL[dtype]


@pytest.mark.parametrize("device,dtype,hidden", DEVICES)
def test_bert_backward_matches_float64_reference(tmp_path, device, dtype, hidden):
    save_tiny_bert(tmp_path, hidden)
    model = load(tmp_path, "sigmoid", device, dtype)
    ref = load(tmp_path, REF, device, torch.float64)
    ids, mask = batch(device)
    w = torch.randn(*ids.shape, hidden, generator=torch.Generator().manual_seed(2))
    w = w.to(device) * mask.unsqueeze(-1)  # the loss sees valid positions only
    for m in (model, ref):
        out = m(input_ids=ids, attention_mask=mask).last_hidden_state
        (out.double() * w).sum().backward()
    for name in ("encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.1.attention.self.value.weight",
                 "embeddings.word_embeddings.weight"):
        g, g_ref = model.get_parameter(name).grad, ref.get_parameter(name).grad
        assert torch.isfinite(g).all()
        assert rel_err(g, g_ref) < 2 * MODEL_TOL[dtype], name


@pytest.mark.parametrize("device,dtype,hidden", DEVICES)
def test_switch_from_softmax_happened(tmp_path, device, dtype, hidden):
    save_tiny_bert(tmp_path, hidden)
    ids, mask = batch(device)
    valid = mask.bool()
    attn = {}
    for impl in ("sigmoid", "sdpa"):
        model = load(tmp_path, impl, device, dtype)
        model.encoder.layer[0].attention.self.register_forward_hook(
            lambda mod, args, out, impl=impl: attn.__setitem__(impl, out[0]))
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    assert rel_err(attn["sigmoid"][valid], attn["sdpa"][valid]) > 0.1


class _Module(torch.nn.Module):
    is_causal = False


def qkv(B=2, H=4, Hkv=2, T=11, D=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(B, H, T, D, generator=g, dtype=dtype),
            torch.randn(B, Hkv, T, D, generator=g, dtype=dtype),
            torch.randn(B, Hkv, T, D, generator=g, dtype=dtype))


def test_attention_function_mask_forms_agree():
    """Boolean 4D, additive 4D (0 / finfo.min, eager style) and 2D padding masks give the same
    result, on the kernels' key-mask path, with GQA heads."""
    q, k, v = qkv()
    keep = torch.tensor([[1] * 11, [1] * 6 + [0] * 5]).bool()
    additive = torch.zeros(2, 1, 1, 11).masked_fill(~keep.view(2, 1, 1, 11),
                                                    torch.finfo(torch.float32).min)
    f = sigmoid_hf.sigmoid_attention_forward
    out_bool, w = f(_Module(), q, k, v, keep.view(2, 1, 1, 11), scaling=0.25)
    out_add, _ = f(_Module(), q, k, v, additive, scaling=0.25)
    out_2d, _ = f(_Module(), q, k, v, keep.long(), scaling=0.25)
    assert w is None and out_bool.shape == (2, 11, 4, 16)
    lens = keep.sum(1).int()
    ref = sigmoid_attention_reference(q.transpose(1, 2).double(), k.transpose(1, 2).double(),
                                      v.transpose(1, 2).double(), seq_lens_k=lens, scale=0.25)
    for out in (out_bool, out_add, out_2d):
        assert rel_err(out, ref) < 1e-5


def test_attention_function_causal_and_dropout_path():
    q, k, v = qkv()
    m = _Module()
    m.is_causal = True
    out, _ = sigmoid_hf.sigmoid_attention_forward(m, q, k, v, None)
    ref = sigmoid_attention_reference(*(t.transpose(1, 2).double() for t in (q, k, v)),
                                      is_causal=True)
    assert rel_err(out, ref) < 1e-5
    # Training with attention dropout runs a dense path with the same bias as the kernels.
    m.train()
    keep = torch.tensor([[1] * 11, [1] * 6 + [0] * 5]).bool().view(2, 1, 1, 11)
    m.is_causal = False
    with pytest.warns(UserWarning, match="dropout"):
        dense, _ = sigmoid_hf.sigmoid_attention_forward(m, q, k, v, keep, dropout=1e-12)
    kernel, _ = sigmoid_hf.sigmoid_attention_forward(m, q, k, v, keep, dropout=0.0)
    assert rel_err(dense, kernel) < 1e-5


def test_unsupported_arguments_raise():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="softcap"):
        sigmoid_hf.sigmoid_attention_forward(_Module(), q, k, v, None, softcap=30.0)
