"""Client models as users build them (small configs, nothing downloaded): Hugging Face BERT,
RoBERTa, DistilBERT, GPT-2, ViT, Llama (SwiGLU) and T5, and timm's CNNs and ViTs. Every activation
application gets its own gate; α = 1 reproduces the model, α = 0 is the model without its
activations, the counts equal a count of activation outputs made here by forward hooks (not by
alphakern); gates per hidden feature take any sequence length, blend per feature as an
independent per-feature oracle does, count and budget per feature, discretize exactly and train;
a feature-gated timm ViT block compiles with fullgraph=True."""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
from torch import nn

from alphakern import alpha_layers, discretize, linearize, nonlinearity_count
from alphakern.graph.budget import gate_sites
from alphakern.modules import FixedGate, FixedSlopeReLU
from tests.utils import set_alpha

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
from timm.layers import activations as timm_act  # noqa: E402
from transformers import activations as hf  # noqa: E402

T = 6  # tokens
# The activation classes these models use, and PyTorch's f of each (the oracle's, not alphakern's)
F_OF = {
    nn.ReLU: torch.relu,
    nn.ReLU6: nn.functional.relu6,
    nn.SiLU: nn.functional.silu,
    nn.GELU: nn.functional.gelu,
    nn.Hardswish: nn.functional.hardswish,
    hf.GELUActivation: nn.functional.gelu,
    hf.NewGELUActivation: lambda x: nn.functional.gelu(x, approximate="tanh"),
    timm_act.GELU: nn.functional.gelu,
}
KIND = {torch.relu: "relu", nn.functional.relu6: "relu6", nn.functional.silu: "silu",
        nn.functional.gelu: "gelu", nn.functional.hardswish: "hardswish"}  # fmt: skip


def f_of(m: nn.Module):
    """PyTorch's f of an activation module of these models, or None (found by class here)."""
    for cls, f in F_OF.items():
        if type(m) is cls:
            return f
    return nn.functional.silu if type(m).__name__ == "SiLUActivation" else None


def _ids(t: int = T, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 50, (2, t), generator=torch.Generator().manual_seed(seed))


def _hf(name: str) -> nn.Module:
    tf = transformers
    small = dict(vocab_size=50, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=20)
    if name == "bert":
        return tf.BertModel(tf.BertConfig(hidden_size=16, intermediate_size=32, **small))
    if name == "roberta":
        return tf.RobertaModel(tf.RobertaConfig(hidden_size=16, intermediate_size=32, **small))
    if name == "distilbert":
        config = tf.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                     max_position_embeddings=20)  # fmt: skip
        return tf.DistilBertModel(config)
    if name == "gpt2":
        return tf.GPT2Model(tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=20))
    if name == "vit":
        return tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32))  # fmt: skip
    if name == "llama":
        return tf.LlamaModel(
            tf.LlamaConfig(hidden_size=16, intermediate_size=24, num_key_value_heads=2, **small)
        )
    assert name == "t5"
    return tf.T5EncoderModel(
        tf.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    )


def _timm(name: str) -> nn.Module:
    kw = dict(img_size=32, patch_size=4) if "patch16" in name else {}
    return timm.create_model(name, pretrained=False, num_classes=10, **kw)


HF = ["bert", "roberta", "distilbert", "gpt2", "vit", "llama", "t5"]
TIMM = ["resnet18", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002", "convnext_atto", "rexnet_100",
        "vit_tiny_patch16_224", "deit_tiny_patch16_224"]  # fmt: skip
TRANSFORMERS = [*HF, "vit_tiny_patch16_224", "deit_tiny_patch16_224"]


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """(the model in eval mode, an example input): token ids, or 32×32 images."""
    torch.manual_seed(0)
    model = (_hf(name) if name in HF else _timm(name)).eval()
    images = name == "vit" or name in TIMM
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) if images else _ids()
    return model, x


def out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model(x)
    return y if isinstance(y, torch.Tensor) else y.last_hidden_state


def activation_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Size]]:
    """(module, output shape) of every activation application, in call order (forward hooks)."""
    calls = []
    hook = lambda m, i, o: calls.append((m, o.shape))  # noqa: E731
    handles = [m.register_forward_hook(hook) for m in model.modules() if f_of(m) is not None]
    try:
        out(model, x)
    finally:
        for h in handles:
            h.remove()
    return calls


def linearized(model: nn.Module, **kw) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Hugging Face models do not trace: the fallback says so
        return linearize(model, backend="torch", **kw).eval()


def without_activations(model: nn.Module, replace) -> nn.Module:
    """A copy with each activation module m replaced by ``replace(m)``."""
    out_model = copy.deepcopy(model)
    originals = dict(model.named_modules())
    for parent_name, parent in list(out_model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if f_of(child) is not None:
                path = f"{parent_name}.{child_name}" if parent_name else child_name
                setattr(parent, child_name, replace(originals[path]))
    return out_model


@pytest.mark.parametrize("name", HF + TIMM)
def test_one_gate_per_activation_application_alpha_one_is_the_model_alpha_zero_none(name):
    model, x = build(name)
    calls = activation_calls(model, x)
    assert calls, "no activation found in the model"
    count: dict[str, int] = {}
    for m, shape in calls:
        kind = KIND[f_of(m)] if f_of(m) in KIND else "gelu"  # NewGELU's tanh form counts as a GELU
        count[kind] = count.get(kind, 0) + shape.numel() // x.shape[0]
    assert nonlinearity_count(model, x) == count
    lin = linearized(model)
    assert len(alpha_layers(lin)) == len(calls)
    set_alpha(lin, 1)
    assert nonlinearity_count(lin, x) == count
    want, got = out(model, x), out(lin, x)
    if name == "gpt2":  # NewGELU writes the tanh GELU out: F.gelu(approximate="tanh") within rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:  # every other class calls PyTorch's f: the model exactly
        assert torch.equal(got, want)
    set_alpha(lin, 0)
    assert nonlinearity_count(lin, x) == {}
    plain = without_activations(model, lambda m: nn.Identity())
    torch.testing.assert_close(out(lin, x), out(plain, x), rtol=1e-5, atol=1e-5)


class _PerFeature(nn.Module):
    """The oracle's per-feature gate at α ∈ {0, 1}: f(x) where keep, x elsewhere."""

    def __init__(self, f, keep: torch.Tensor) -> None:
        super().__init__()
        self.f, self.keep = f, keep

    def forward(self, x):
        return torch.where(self.keep, self.f(x), x)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_feature_gates_blend_per_hidden_feature_count_and_discretize(name):
    model, x = build(name)
    calls = activation_calls(model, x)
    lin = linearized(model, granularity="feature", example_input=x)
    layers = alpha_layers(lin)
    assert [tuple(m.gamma.shape) for _, m in layers] == [tuple(shape[-1:]) for _, shape in calls]
    # a random half of each gate's features linear (α = 0), the rest f (α = 1)
    g = torch.Generator().manual_seed(3)
    keeps = {}
    for (_, m), (orig, _) in zip(layers, calls, strict=True):
        keep = torch.rand(m.gamma.shape, generator=g) < 0.5
        keeps[orig] = keep
        with torch.no_grad():
            m.gamma.copy_(torch.where(keep, 10.0, -10.0))
            m.nu.fill_(1e4)
    oracle = without_activations(model, lambda m: _PerFeature(f_of(m), keeps[m]))
    want = out(oracle, x)
    torch.testing.assert_close(out(lin, x), want, rtol=1e-5, atol=1e-5)
    # counts and the budget's positions: a feature gate controls its feature at every token
    tokens = [shape.numel() // x.shape[0] // shape[-1] for _, shape in calls]
    kept = sum(int(keeps[m].sum()) * n for (m, _), n in zip(calls, tokens, strict=True))
    assert sum(nonlinearity_count(lin, x).values()) == kept
    sites = gate_sites(lin, x)
    assert [(s.positions, s.gates) for s in sites] == [
        (n, s[-1]) for n, (_, s) in zip(tokens, calls, strict=True)
    ]
    exact = discretize(lin)
    assert all(isinstance(m, FixedGate | FixedSlopeReLU) and m.granularity == "feature"
               for m in exact.modules() if isinstance(m, FixedGate | FixedSlopeReLU))  # fmt: skip
    assert sum(isinstance(m, FixedGate | FixedSlopeReLU) for m in exact.modules()) == len(calls)
    torch.testing.assert_close(out(exact, x), want, rtol=1e-5, atol=1e-5)
    assert nonlinearity_count(exact, x) == nonlinearity_count(lin, x)


@pytest.mark.parametrize("name", [n for n in HF if n != "vit"])
def test_one_feature_gated_model_takes_two_sequence_lengths_and_trains(name):
    model, ids = build(name)
    lin = linearized(model, granularity="feature", example_input=ids)
    shapes = [tuple(m.gamma.shape) for _, m in alpha_layers(lin)]
    short = _ids(T - 2, seed=5)
    assert out(lin, short).shape[:2] == short.shape  # materialised at T tokens, run at T − 2
    assert [tuple(m.gamma.shape) for _, m in alpha_layers(lin)] == shapes
    lin.train()
    y = lin(ids)
    y = y if isinstance(y, torch.Tensor) else y.last_hidden_state
    y.square().mean().backward()
    for gate_name, m in alpha_layers(lin):
        assert m.gamma.grad is not None and bool(m.gamma.grad.isfinite().all()), gate_name
        assert bool((m.gamma.grad != 0).any()), gate_name


def test_feature_gated_timm_vit_block_compiles_fullgraph():
    model, _ = build("vit_tiny_patch16_224")
    block = model.blocks[0]
    tokens = torch.randn(2, 65, 192, generator=torch.Generator().manual_seed(2))
    gated = linearize(block, granularity="feature", example_input=tokens)
    ((gate_name, gate),) = alpha_layers(gated)
    assert gate.gamma.shape == (768,)
    with torch.no_grad():
        gate.gamma.uniform_(-2, 2)
    torch._dynamo.reset()
    compiled = torch.compile(gated, fullgraph=True)
    results = []
    for fn in (gated, compiled):
        gate.gamma.grad = None
        xin = tokens[:, :40].clone().requires_grad_()  # another sequence length than materialised
        y = fn(xin)
        y.square().mean().backward()
        results.append((y.detach(), xin.grad, gate.gamma.grad.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_timm_activation_classes_gate_as_their_f_not_the_ops_inside():
    """Traced through, timm's HardSwish would show a relu6 of x + 3 and Swish a sigmoid: as table
    rows they are one gate each, of hardswish and silu, and α = 1 is them within fp32 rounding."""
    model = nn.Sequential(nn.Linear(4, 8), timm_act.HardSwish(), nn.Linear(8, 8), timm_act.Swish(),
                          nn.Linear(8, 8), timm_act.GELUTanh()).eval()  # fmt: skip
    x = torch.randn(5, 4) * 3
    lin = linearize(model, backend="torch").eval()
    assert [str(m.act) for _, m in alpha_layers(lin)] == ["hardswish", "silu", "gelu_tanh"]
    set_alpha(lin, 1)
    torch.testing.assert_close(out(lin, x), out(model, x), rtol=1e-6, atol=1e-6)
    assert (
        nonlinearity_count(model, x) == {"gelu": 8, "silu": 8, "hardswish": 8} == nonlinearity_count(lin, x)
    )
