"""Transformer MLPs folded exactly (issue 30): Linear → per-feature gate of 0/1 weights → Linear
becomes the narrow MLP plus a linear bypass (``split``) or the concatenated form (``concat``).
Each form against the MLP written out in float64 here (ragged sizes, bias on/off, all/none/some
features linear, dropout in eval); random feature patterns on timm, torchvision and Hugging Face
models fold to the same outputs; the refusals say why; a folded ViT runs in onnxruntime."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alphakern
from alphakern import alpha_layers, discretize, fold, linearize
from alphakern.folding.mlp import SWIGLU, PartialActivation, SplitMLP, concat_modules, mlp_gate, split_modules
from alphakern.modules import FixedGate, FixedSlopeReLU
from alphakern.ops.core.activations import Activation

os.environ.setdefault("HF_HUB_OFFLINE", "1")
D64 = torch.float64


def _mlp(d, h, d_out, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    l1, l2 = nn.Linear(d, h, bias=bias).double(), nn.Linear(h, d_out, bias=bias).double()
    with torch.no_grad():
        for p in (*l1.parameters(), *l2.parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=D64))
    return l1, l2


def _reference(x, l1, keep, f, l2):
    """W2·g(W1·x + b1) + b2 with g = f on the kept features, the identity elsewhere (float64)."""
    u = F.linear(x, l1.weight, l1.bias)
    return F.linear(torch.where(keep, f(u), u), l2.weight, l2.bias)


PATTERNS = {  # which features keep f (bool [h])
    "some": lambda h, g: torch.rand(h, generator=g) < 0.4,
    "none": lambda h, g: torch.zeros(h, dtype=torch.bool),
    "all-but-one": lambda h, g: torch.arange(h) != h // 2,
    "one": lambda h, g: torch.arange(h) == 1,
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dims", [(7, 29, 7), (16, 64, 16), (5, 13, 3), (12, 3, 9)], ids=str)
def test_each_form_is_the_mlp_in_float64(dims, bias, pattern):
    d, h, d_out = dims
    l1, l2 = _mlp(d, h, d_out, bias)
    keep = PATTERNS[pattern](h, torch.Generator().manual_seed(1))
    x = torch.randn(3, 4, d, dtype=D64)
    want = _reference(x, l1, keep, F.gelu, l2)
    with torch.no_grad():
        split = split_modules(l1, keep, nn.GELU(), l2)
        torch.testing.assert_close(split(x), want, rtol=1e-12, atol=1e-12)
        first, partial, second = concat_modules(l1, keep, nn.GELU(), l2)
        torch.testing.assert_close(second(partial(first(x))), want, rtol=1e-12, atol=1e-12)
    n = int(keep.sum())
    assert (split.narrow_in is None) == (n == 0) and first.out_features == n + d_out and partial.kept == n


def test_the_bypass_is_two_thin_factors_when_few_features_are_linear():
    l1, l2 = _mlp(16, 64, 16, True)
    keep = torch.arange(64) >= 3  # 3 linear features: 3·(16 + 16) MACs < 16·16
    split = split_modules(l1, keep, nn.GELU(), l2)
    assert isinstance(split.bypass, nn.Sequential) and split.bypass[0].out_features == 3
    x = torch.randn(5, 16, dtype=D64)
    with torch.no_grad():
        torch.testing.assert_close(split(x), _reference(x, l1, keep, F.gelu, l2), rtol=1e-12, atol=1e-12)


def _feature_gates(model, example, p_linear=0.6, seed=0, all_linear=(), **kw):
    """``model`` gated per feature, a random share of each gate's features linear (α = 0) — all of
    them for the gates numbered in ``all_linear`` —, the rest f (α = 1), then discretised; float64."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lin = linearize(
            model.double().eval(), granularity="feature", backend="torch", example_input=example, **kw
        )
    g = torch.Generator().manual_seed(seed)
    for i, (_, m) in enumerate(alpha_layers(lin)):
        with torch.no_grad():
            p = 1.0 if i in all_linear else p_linear
            m.gamma.copy_(torch.where(torch.rand(m.gamma.shape, generator=g) < p, -10.0, 10.0))
            m.nu.fill_(1e4)
    return discretize(lin.eval())


def _out(model, x):
    with torch.no_grad():
        y = model(x) if not isinstance(x, dict) else model(**x)
    return y if isinstance(y, torch.Tensor) else y.last_hidden_state


def _timm(name, **kw):
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, num_classes=10, img_size=32, patch_size=4, **kw)


def _mixer():
    timm = pytest.importorskip("timm")
    return timm.models.MlpMixer(num_classes=10, img_size=32, patch_size=4, num_blocks=2, embed_dim=32)


def _torchvision(name):
    import torchvision

    if name == "vit_b_16":
        return torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=2,
                                                   hidden_dim=32, mlp_dim=128, num_classes=10)  # fmt: skip
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], num_classes=10
    )


FX_MODELS = {
    "timm-vit": lambda: _timm("vit_tiny_patch16_224", depth=2),
    "timm-deit": lambda: _timm("deit_tiny_patch16_224", depth=2),
    "timm-mixer": lambda: _mixer(),
    "torchvision-vit": lambda: _torchvision("vit_b_16"),
    "torchvision-swin": lambda: _torchvision("swin_t"),
}


@pytest.mark.parametrize("policy", ["all", "flops"])
@pytest.mark.parametrize("name", list(FX_MODELS))
def test_random_feature_patterns_fold_exactly_through_fx(name, policy):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, dtype=D64)
    model = _feature_gates(FX_MODELS[name](), x)
    gates = [m for m in model.modules() if isinstance(m, FixedGate | FixedSlopeReLU)]
    assert gates, "no mixed feature gate"
    folded = fold(model, x, policy=policy)
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-9, atol=1e-10)
    mlps = folded.fold_info.mlps
    assert len(mlps) == len(gates) and all(r["form"] == "split" for r in mlps)  # fewest MACs at 60 % linear
    assert sorted(r["kept"] for r in mlps) == sorted(int((g.weight == 1).sum()) for g in gates)
    assert all(r["macs_after"] <= r["macs_before"] for r in mlps)  # a mixer's token MLP: h = d/2
    assert not any(isinstance(m, FixedGate | FixedSlopeReLU) for m in folded.modules())


def test_latency_policy_times_the_forms_and_keeps_what_is_faster():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = _feature_gates(_timm("vit_tiny_patch16_224", depth=1), x.double(), p_linear=0.75).float()
    folded = fold(model, x, policy="latency")
    (record,) = folded.fold_info.mlps
    assert set(record["seconds"]) == {"mlp", "split", "concat"}
    best = min(record["seconds"], key=record["seconds"].get)
    assert record["form"] == (None if best == "mlp" else best)
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-4, atol=1e-4)


def _hf(name):
    tf = pytest.importorskip("transformers")
    small = dict(vocab_size=50, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=20)
    if name == "bert":
        return tf.BertModel(tf.BertConfig(hidden_size=16, intermediate_size=64, **small))
    if name == "gpt2":
        return tf.GPT2Model(tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=20))
    if name == "vit":
        return tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64))  # fmt: skip
    if name == "t5":  # wi → ReLU → dropout → wo: an eval dropout between the gate and the second linear
        config = tf.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=64, num_layers=2, num_heads=2)
        return tf.T5EncoderModel(config)
    if name == "bloom":  # its own BloomGelu
        return tf.BloomModel(tf.BloomConfig(vocab_size=50, hidden_size=16, n_layer=2, n_head=2))
    return tf.LlamaModel(tf.LlamaConfig(hidden_size=16, intermediate_size=24, num_key_value_heads=2, **small))


def _hf_input(name):
    if name == "vit":
        return torch.randn(2, 3, 32, 32, dtype=D64)
    return torch.randint(3, 50, (2, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit", "t5"])
def test_hugging_face_mlps_fold_module_by_module(name):
    torch.manual_seed(0)
    x = _hf_input(name)
    model = _feature_gates(_hf(name), x)
    folded = fold(model, x, policy="all")
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-9, atol=1e-10)
    assert "only its MLPs and linear → linear chains were folded" in folded.fold_info.not_merged[0][1]
    mlps = folded.fold_info.mlps
    assert len(mlps) == 2 and all(r["form"] == "concat" for r in mlps)
    assert sum(isinstance(m, PartialActivation) for m in folded.modules()) == 2


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit", "bloom", "t5"])
def test_hugging_face_mlps_made_wholly_linear_merge_into_one_linear(name):
    """The first layer's gate made every feature linear (``discretize``: an nn.Identity), the
    second's some: the first MLP becomes one d × d linear (in its second linear's place), the
    second the concat form."""
    torch.manual_seed(0)
    x = _hf_input(name)
    model = _feature_gates(_hf(name), x, all_linear=(0,))
    folded = fold(model, x, policy="all")
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-9, atol=1e-10)
    chains = [names for names, why in folded.fold_info.merged if why == "linears merged"]
    assert len(chains) == 1 and len(folded.fold_info.mlps) == 1
    assert isinstance(folded.get_submodule(chains[0][0]), nn.Identity)
    second = folded.get_submodule(chains[0][1])
    assert isinstance(second, nn.Linear) and second.in_features == second.out_features == 16
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(folded) < count(model)


def _more_hf(name: str):
    """More Hugging Face architectures, tiny, from configs: (model, example input)."""
    tf = pytest.importorskip("transformers")
    text = dict(vocab_size=50, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32)
    swiglu = dict(hidden_size=16, intermediate_size=24, num_key_value_heads=1, **text)
    configs = {
        "opt": lambda: tf.OPTModel(tf.OPTConfig(hidden_size=16, ffn_dim=32, word_embed_proj_dim=16, **text)),
        "distilbert": lambda: tf.DistilBertModel(
            tf.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
        ),
        "phi": lambda: tf.PhiModel(tf.PhiConfig(hidden_size=16, intermediate_size=32, **text)),
        "gpt_neox": lambda: tf.GPTNeoXModel(tf.GPTNeoXConfig(hidden_size=16, intermediate_size=32, **text)),
        "falcon": lambda: tf.FalconModel(
            tf.FalconConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
        ),
        "swin": lambda: tf.SwinModel(
            tf.SwinConfig(
                image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
            )
        ),
        "mistral": lambda: tf.MistralModel(tf.MistralConfig(**swiglu)),
        "qwen2": lambda: tf.Qwen2Model(tf.Qwen2Config(**swiglu)),
    }
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(2, 3, 32, 32, dtype=D64, generator=g)
        if name == "swin"
        else torch.randint(3, 50, (2, 6), generator=g)
    )
    return configs[name](), x


@pytest.mark.parametrize(
    "name", ["opt", "distilbert", "phi", "gpt_neox", "falcon", "swin", "mistral", "qwen2"]
)
def test_more_hugging_face_architectures_fold_exactly_or_say_why_not(name):
    """The first MLP wholly linear, the second mixed: one linear and one concat form, the same
    outputs within 1e-9 in float64 — SwiGLU MLPs (Mistral, Qwen2) excepted: nothing merged, the
    mixed one named with the reason (the wholly linear one has no gate left to name: a product of
    two projections, which no merge takes)."""
    torch.manual_seed(0)
    model, x = _more_hf(name)
    model = _feature_gates(model, x, all_linear=(0,))
    folded = fold(model, x, policy="all")
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-9, atol=1e-10)
    info = folded.fold_info
    chains = sum(why == "linears merged" for _, why in info.merged)
    if name in ("mistral", "qwen2"):
        assert chains == 0 and info.mlps == [] and sum(SWIGLU in why for _, why in info.not_merged) == 1
    else:
        assert chains == 1 and [r["form"] for r in info.mlps] == ["concat"], info


class _Untraceable(nn.Module):
    """Linear layers behind data-dependent control flow: fx cannot trace it (the module-by-module path)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x if x.sum() > 0 else -x)


def _chains(folded: nn.Module) -> list:
    return [names for names, why in folded.fold_info.merged if why == "linears merged"]


def test_linear_chains_of_an_untraceable_model_merge_as_the_policy_says():
    """A pair the MAC rule refuses under "flops" (and "all" merges), then a pair each policy merges;
    a linear run twice refused with the reason and a later pair still merged; a chain of three
    merges its first pair only (the second linear is taken)."""
    torch.manual_seed(0)
    x = torch.randn(3, 8, dtype=D64)
    layers = nn.Linear(8, 2), nn.Dropout(0.1), nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8)
    model = _Untraceable(*layers).double().eval()  # the first pair: 32 MACs a row, merged 64
    kept = fold(model, x, policy="flops")
    assert (("body.0", "body.2"), "merging would raise MACs") in kept.fold_info.not_merged
    assert _chains(kept) == [("body.4", "body.5")]
    merged = fold(model, x, policy="all")
    assert _chains(merged) == [("body.0", "body.2"), ("body.4", "body.5")]
    for folded in (kept, merged):
        torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-12, atol=1e-12)
    shared = nn.Linear(8, 8)
    twice = _Untraceable(shared, nn.Linear(8, 8), shared, nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8))
    folded = fold(twice.double().eval(), x, policy="all")
    assert _chains(folded) == [("body.4", "body.5")]
    assert any("runs more than once" in why for _, why in folded.fold_info.not_merged)
    torch.testing.assert_close(_out(folded, x), _out(twice, x), rtol=1e-12, atol=1e-12)
    three = _Untraceable(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)).double().eval()
    folded = fold(three, x, policy="all")
    assert _chains(folded) == [("body.0", "body.1")]
    torch.testing.assert_close(_out(folded, x), _out(three, x), rtol=1e-12, atol=1e-12)


class _UntraceableMLP(nn.Module):
    """Linear → feature gate → Linear behind data-dependent control flow, with the first linear's
    output also added to the result (``skip``) or the gate called a second time (``twice``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 16)
        keep = torch.arange(16) % 3 == 0
        self.act = FixedGate(keep.double(), activation=Activation("gelu"), granularity="feature")

    def forward(self, x):
        h = self.fc1(x if x.sum() > 0 else -x)
        if self.how == "skip":
            return self.fc2(self.act(h)) + h
        first = self.act(h)  # the second call feeds fc2
        return self.fc2(self.act(h)) + first


@pytest.mark.parametrize(
    "how, why",
    [
        ("skip", "the first linear's output is read elsewhere too"),
        ("twice", "runs more than once in a forward"),
    ],
)
def test_untraced_mlps_that_cannot_fold_say_why(how, why):
    x = torch.randn(3, 8, dtype=D64)
    model = _UntraceableMLP(how).double().eval()
    folded = fold(model, x, policy="all")
    assert folded.fold_info.mlps == [] and any(why in w for _, w in folded.fold_info.not_merged)
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-12, atol=1e-12)


def test_refusals_name_the_reason():
    torch.manual_seed(0)
    ids = _hf_input("llama")
    llama = fold(_feature_gates(_hf("llama"), ids), ids, policy="all")
    assert llama.fold_info.mlps == []
    assert sum("SwiGLU" in why for _, why in llama.fold_info.not_merged) == 2
    # per-token gates, undecided gates and gates still learning, on one traced MLP
    x = torch.randn(2, 5, 8, dtype=D64)
    gelu = Activation("gelu")
    for gate, why in [
        (
            FixedGate(torch.tensor([1.0, 0, 1, 0, 1]), activation=gelu, granularity="channel"),
            "gates per channel",
        ),
        (FixedGate(torch.full((16,), 0.5), activation=gelu, granularity="feature"), "undecided"),
        (alphakern.AlphaGate(activation="gelu", granularity="feature"), "still learning"),
    ]:
        model = nn.Sequential(nn.Linear(8, 16), gate, nn.Linear(16, 8)).double().eval()
        model(x)
        folded = fold(model, x, policy="all")
        assert folded.fold_info.mlps == [] and any(why in w for _, w in folded.fold_info.not_merged), why


def test_mlp_gate_reads_relu_gates_by_their_slopes():
    keep, act = mlp_gate(FixedSlopeReLU(torch.tensor([0.0, 1.0, 0.0]), granularity="feature"))
    assert keep.tolist() == [True, False, True] and isinstance(act, nn.ReLU)


def test_a_folded_vit_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from alphakern.onnx_export import export_onnx

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = _feature_gates(_timm("vit_tiny_patch16_224", depth=2), x.double()).float()
    folded = fold(model, x, policy="all")
    assert any(isinstance(m, SplitMLP) for m in folded.modules())
    path = export_onnx(folded, x, tmp_path / "vit.onnx")
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])
    torch.testing.assert_close(got, _out(model, x), rtol=1e-4, atol=1e-4)


def test_the_vit_trains_to_a_gelu_budget_with_feature_gates_and_its_run_folds(tmp_path):
    """--model vit --granularity feature --budget 0.5 --budget-kind gelu, fine-tuned with --distill
    from a GELU run; `alphakern fold RUN` folds its MLPs and keeps the test accuracy."""
    import json

    from alphakern.cli import main
    from tests.cifar_fixtures import write_pickles
    from tests.train_helpers import run, train_cfg

    data = write_pickles(tmp_path / "cifar", n_per_batch=16, n_test=24)
    common = dict(model="vit", epochs=1, log_every=2)
    base = run(train_cfg(data, tmp_path / "gelu", activation="relu", **common))  # the GELU network
    assert base.metrics["nonlinearities_before"] == {"gelu": 6 * 17 * 768}
    gated = tmp_path / "gated"
    cfg = train_cfg(data, gated, granularity="feature", budget=0.5, budget_kind="gelu", finetune_epochs=1,
                    init=str(tmp_path / "gelu"), distill=True, **common)  # fmt: skip
    trainer = run(cfg)
    assert sum(trainer.metrics["nonlinearities_after"].values()) <= 0.5 * 6 * 17 * 768
    onnx = ["--onnx", str(tmp_path / "onnx")] if _has("onnxruntime") and _has("onnxscript") else []
    assert main(["fold", str(gated), "--policy", "all", "--out", str(tmp_path / "f"), *onnx]) == 0
    result = json.loads((tmp_path / "f" / "fold.json").read_text())
    assert result["test_acc_after"] == pytest.approx(result["test_acc_before"], abs=1e-9)
    mixed = [r for r in result["mlps"] if 0 < r["kept"] < r["features"]]
    assert mixed and all(r["form"] == "split" and r["macs_after"] < r["macs_before"] for r in mixed)
    if onnx:  # --onnx: both networks exported, the same outputs in onnxruntime at another batch size
        import onnxruntime as ort

        x = torch.randn(3, 3, 32, 32).numpy()
        outs = []
        for name in ("unfolded", "folded"):
            path = tmp_path / "onnx" / f"{name}.onnx"
            s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outs.append(torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x})[0]))
        assert outs[0].shape == (3, 10)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
        import onnx

        def params(name: str) -> int:  # what the file holds: the folded network's weights are fewer
            graph = onnx.load(str(tmp_path / "onnx" / f"{name}.onnx")).graph
            return sum(int(np.prod(t.dims)) for t in graph.initializer)

        saved = result["report"]["before"]["params"] - result["report"]["after"]["params"]
        assert saved > 0 and params("unfolded") - params("folded") > 0.9 * saved  # (plus a few constants)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_mlp_dims_reads_linear_and_conv1d_shapes():
    """(d, h, d_out) off the weights' shapes: nn.Linear stores [out, in], transformers' Conv1D [in, out]."""
    tf = pytest.importorskip("transformers")
    from alphakern.folding.mlp import mlp_dims

    assert mlp_dims(nn.Linear(3, 5), nn.Linear(5, 7)) == (3, 5, 7)
    conv1d = tf.pytorch_utils.Conv1D
    assert mlp_dims(conv1d(5, 3), conv1d(7, 5)) == (3, 5, 7)  # Conv1D(nf=out, nx=in)
    with pytest.raises(TypeError, match="an nn.Linear or a transformers Conv1D, got ReLU"):
        mlp_dims(nn.ReLU(), nn.Linear(5, 7))
