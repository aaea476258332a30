"""Hugging Face transformers' own activation classes (issue 29, first part): models built from small
configs (nothing downloaded) get a gate per activation module — through the module-swap fallback,
since fx cannot trace them — α = 1 reproduces the model (exactly where the class calls F.<f>,
within fp32 rounding where it writes f out), α = 0 is the activation-free model, the counts see
the activations, and ``register_activation`` teaches a class."""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
from torch import nn

import alphakern
from alphakern import alpha_layers, linearize, nonlinearity_count, register_activation
from tests.utils import set_alpha

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from transformers import activations as hf  # noqa: E402

T = 6  # tokens


def _models():
    """(name, model, its activation class, per-sample activation outputs at T tokens)."""
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16))  # fmt: skip
    gpt2 = transformers.GPT2Model(
        transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16)
    )
    llama = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16))  # fmt: skip
    bloom = transformers.BloomModel(
        transformers.BloomConfig(vocab_size=50, hidden_size=16, n_layer=2, n_head=2)
    )
    return [
        ("bert", bert, hf.GELUActivation, 2 * T * 32),
        ("gpt2", gpt2, hf.NewGELUActivation, 2 * T * 64),
        ("llama", llama, None, 2 * T * 24),
        ("bloom", bloom, None, 2 * T * 64),  # its own BloomGelu
    ]


def _out(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("case", range(4), ids=["bert", "gpt2", "llama", "bloom"])
def test_hugging_face_models_get_a_gate_per_activation_module(case):
    name, model, cls, per_sample = _models()[case]
    model.eval()
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, T))
    acts = [m for m in model.modules() if module_kind(m)]
    assert len(acts) == 2, [type(m).__name__ for m in model.modules()]
    kind = "silu" if name == "llama" else "gelu"
    assert nonlinearity_count(model, ids) == {kind: per_sample}  # the ungated model's activations
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lin = linearize(model, backend="torch").eval()
    assert any("swapped the activation modules" in str(x.message) for x in w)  # fx could not trace it
    assert len(alpha_layers(lin)) == 2
    set_alpha(lin, 1)
    assert nonlinearity_count(lin, ids) == {kind: per_sample}
    want, got = _out(model, ids), _out(lin, ids)
    if name in ("gpt2", "bloom"):  # NewGELU, BloomGelu write the tanh GELU out: f within fp32 rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    else:  # GELUActivation and Llama's SiLU call F.gelu / F.silu: exactly the model
        assert torch.equal(got, want)
    set_alpha(lin, 0)
    assert nonlinearity_count(lin, ids) == {}
    identity = copy.deepcopy(model)
    for parent in list(identity.modules()):
        for child_name, child in list(parent.named_children()):
            if module_kind(child):
                setattr(parent, child_name, nn.Identity())
    torch.testing.assert_close(_out(lin, ids), _out(identity, ids), rtol=1e-6, atol=1e-6)


def module_kind(m: nn.Module) -> bool:
    """An activation module of these models, found independently of alphakern's table."""
    return isinstance(m, (hf.GELUActivation, hf.NewGELUActivation, nn.SiLU)) or type(m).__name__ in (
        "SiLUActivation",
        "BloomGelu",
    )


def test_fallback_warning_names_the_activation_modules_it_left_ungated():
    model = nn.Sequential(nn.Linear(4, 4), hf.QuickGELUActivation(), nn.Linear(4, 4), hf.GELUActivation())

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.body(x)
            return self.body(-x)

    with pytest.warns(
        UserWarning, match=r"Left without a gate: body\.1 \(QuickGELUActivation: x·σ\(1\.702x\)"
    ):
        lin = linearize(Untraceable())
    assert [n for n, _ in alpha_layers(lin)] == ["body.3"]


def test_traced_models_gate_library_classes_as_one_node():
    """Where fx traces the model, a library class is a leaf (one gate), not the tensor ops inside."""
    model = nn.Sequential(nn.Linear(4, 8), hf.NewGELUActivation(), nn.Linear(8, 4)).eval()
    x = torch.randn(3, 4)
    lin = linearize(model, backend="torch").eval()
    assert [str(m.act) for _, m in alpha_layers(lin)] == ["gelu_tanh"]
    set_alpha(lin, 1)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), model(x), rtol=1e-6, atol=1e-6)
    assert nonlinearity_count(model, x) == {"gelu": 8} == nonlinearity_count(lin, x)


class _MyGELU(nn.Module):
    def forward(self, x):
        return x * 0.5 * (1.0 + torch.erf(x / 2**0.5))


def test_register_activation_teaches_a_class_and_names_bad_arguments():
    model = nn.Sequential(nn.Linear(4, 8), _MyGELU(), nn.Linear(8, 4)).eval()
    x = torch.randn(3, 4)
    assert alpha_layers(linearize(model)) == []  # unknown: traced through, its erf left alone
    register_activation(_MyGELU, "gelu")
    try:
        lin = linearize(model, backend="torch").eval()
        assert [str(m.act) for _, m in alpha_layers(lin)] == ["gelu"]
        set_alpha(lin, 1)
        with torch.no_grad():
            torch.testing.assert_close(lin(x), model(x), rtol=1e-6, atol=1e-6)
        assert nonlinearity_count(model, x) == {"gelu": 8}
    finally:
        from alphakern.ops.core.activations import REGISTERED

        REGISTERED[:] = [(c, a) for c, a in REGISTERED if c is not _MyGELU]
    with pytest.raises(TypeError, match=r"cls must be a torch.nn.Module subclass, got <function"):
        register_activation(lambda x: x, "gelu")
    with pytest.raises(ValueError, match=r"kind must be one of \[.*\], got 'swish'"):
        register_activation(_MyGELU, "swish")
    with pytest.raises(ValueError, match=r"params may be negative_slope and approximate, got \['slope'\]"):
        register_activation(_MyGELU, "leaky_relu", slope=0.1)
    assert alphakern.register_activation is register_activation


@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_example_input_creates_every_gate_up_front(granularity):
    """Lazy γ created by linearize itself (an optimiser built right after sees them), ν and the
    training flag untouched — on a CNN and on BERT (token ids)."""
    import torchvision

    from alphakern.modules import AlphaGate

    cnn = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    lin = linearize(cnn, granularity=granularity, example_input=x)
    gates = [m for m in lin.modules() if isinstance(m, AlphaGate)]
    assert gates and not any(g.has_uninitialized_params() for g in gates) and lin.training
    assert all(float(g.nu) == 0.0 for g in gates)
    torch.optim.Adam(lin.parameters())  # no uninitialized parameter left
    bert = _models()[0][1]
    ids = torch.randint(0, 50, (2, T))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gated = linearize(bert, granularity=granularity, example_input=ids)
    bg = [m for m in gated.modules() if isinstance(m, AlphaGate)]
    assert len(bg) == 2 and not any(g.has_uninitialized_params() for g in bg)
    lazy = linearize(cnn, granularity=granularity)
    assert all(m.has_uninitialized_params() for m in lazy.modules() if isinstance(m, AlphaGate))


def test_fallback_names_a_gate_called_at_several_places_when_given_an_example_input():
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.act, self.other = nn.Linear(4, 4), hf.GELUActivation(), hf.GELUActivation()

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.other(self.act(self.lin(self.act(x))))

    with pytest.warns(UserWarning, match=r"share one gate there: act \(2 calls\)$"):
        lin = linearize(Untraceable(), granularity="feature", example_input=torch.randn(3, 4))
    assert [n for n, _ in alpha_layers(lin)] == ["act", "other"]


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_gradient_checkpointing_keeps_nu_and_the_gate_gradients(use_reentrant):
    """Hugging Face's gradient_checkpointing_enable (torch.utils.checkpoint per layer) on a
    gated GPT-2: ν steps once per forward and the gates' gradients are the plain model's — the
    recomputed forward used to step ν a second time and differentiate there."""
    ids = torch.randint(0, 50, (2, T), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = linearize(_models()[1][1], granularity="feature", example_input=ids)
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert checkpointed.is_gradient_checkpointing
    for m in (plain, checkpointed):
        m.train()
        m.config.use_cache = False
        torch.manual_seed(0)  # the same dropout masks (checkpoint replays its RNG state)
        m(input_ids=ids).last_hidden_state.square().mean().backward()
    pairs = list(zip(alpha_layers(plain), alpha_layers(checkpointed), strict=True))
    assert len(pairs) == 2
    for (name, a), (_, b) in pairs:
        assert float(a.nu) == float(b.nu) == pytest.approx(0.01), name
        torch.testing.assert_close(b.gamma.grad, a.gamma.grad, rtol=1e-5, atol=1e-8, msg=name)
