"""Direct logit attribution (the ``decomposition`` field) against an independent float64
computation: the model copied to float64, forward hooks on the modules this test names per
family (no lensreport code), the final norm written out by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import tiny

TEXT = "The quick brown fox jumps over the lazy dog. The capital of France is"


@dataclass(frozen=True)
class Family:
    """What the test knows of a family, written by hand: the modules whose outputs each
    block adds (in the order they run) and their components' names, its output projection,
    its final norm."""

    blocks: str  # path of the block list
    parts: tuple[str, ...]  # what the block adds (modules inside a block)
    projection: str | None  # the attention's output projection (None: no heads)
    conv1d: bool  # the projection's weight is (inputs, outputs)
    norm: str  # final norm path
    layernorm: bool  # centres (LayerNorm) or not (RMSNorm)
    plus_one: bool  # RMSNorm multiplies by 1 + weight (Gemma)
    names: tuple[str, ...] = ("attn", "mlp")  # the components' names before ".<block>"
    # RWKV: block 1 norms its input (this module's output is what the blocks add to), and
    # at inference the stream is halved after every ``config.rescale_every``-th block.
    input_norm: str | None = None
    halves: bool = False


FAMILIES = {
    "llama": Family("model.layers", ("self_attn", "mlp"), "self_attn.o_proj", False,
                    "model.norm", False, False),
    "gpt2": Family("transformer.h", ("attn", "mlp"), "attn.c_proj", True, "transformer.ln_f",
                   True, False),
    "gemma2": Family("model.layers", ("post_attention_layernorm", "post_feedforward_layernorm"),
                     None, False, "model.norm", False, True),
    "gpt_neox": Family("gpt_neox.layers", ("attention", "mlp"), "attention.dense", False,
                       "gpt_neox.final_layer_norm", True, False),
    "mixtral": Family("model.layers", ("self_attn", "mlp"), "self_attn.o_proj", False,
                      "model.norm", False, False),
    # One part: a state-space block adds its mixer's output and nothing else.
    "mamba": Family("backbone.layers", ("mixer",), None, False, "backbone.norm_f", False,
                    False, ("mixer",)),
    # Three parts: Mamba and attention side by side on the normed input, then the MLP.
    "falcon_h1": Family("model.layers", ("mamba", "self_attn", "feed_forward"), None, False,
                        "model.final_layernorm", False, False,
                        ("mamba", "self_attn", "feed_forward")),
    # Block 1 norms the embeddings first; the tiny config halves the stream after every block.
    "rwkv": Family("rwkv.blocks", ("attention", "feed_forward"), None, False, "rwkv.ln_out",
                   True, False, input_norm="pre_ln", halves=True),
}


def _get(module: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def reference(model, family: Family, ids: list[int], tokens: list[list[int]]) -> dict:
    """Float64 attributions per component (and head), the pre-softcap logits and the
    post-attention states, from hooks on a float64 copy of ``model``."""
    m64 = copy.deepcopy(model).double().eval()
    if hasattr(m64, "set_experts_implementation"):  # grouped matmuls take no float64
        try:
            m64.set_experts_implementation("eager")
        except (ValueError, AttributeError):
            pass
    blocks = _get(m64, family.blocks)
    seen: dict[str, list[torch.Tensor]] = {"z": [], "in": [], "out": []}
    seen.update({part: [] for part in family.parts})
    hooks = []

    def keep(name: str):
        return lambda _m, _a, out: seen[name].append(_first(out)[0].clone())

    for block in blocks:
        hooks.append(block.register_forward_pre_hook(
            lambda _m, args, kwargs: seen["in"].append(
                (args[0] if args else kwargs["hidden_states"])[0].clone()), with_kwargs=True))
        hooks.append(block.register_forward_hook(
            lambda _m, _a, out: seen["out"].append(_first(out)[0].clone())))
        for part in family.parts:
            hooks.append(_get(block, part).register_forward_hook(keep(part)))
        if family.projection:
            hooks.append(_get(block, family.projection).register_forward_pre_hook(
                lambda _m, args: seen["z"].append(args[0][0].clone())))
    if family.input_norm:
        seen["embed"] = []
        hooks.append(_get(blocks[0], family.input_norm).register_forward_hook(keep("embed")))
    with torch.no_grad():
        m64(input_ids=torch.tensor([ids]), use_cache=False)
    for hook in hooks:
        hook.remove()
    norm = _get(m64, family.norm)
    every = getattr(m64.config, "rescale_every", 0) if family.halves else 0
    # What the stream is multiplied by after block b (0-based) until the final norm.
    carried = [0.5 ** sum(1 for later in range(b, len(blocks)) if every and
                          (later + 1) % every == 0) for b in range(len(blocks))]
    x = seen["out"][-1] * (0.5 if every and len(blocks) % every == 0 else 1.0)
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    centred = x - x.mean(-1, keepdim=True) if family.layernorm else x
    s = 1.0 / torch.sqrt((centred ** 2).mean(-1) + eps)
    weight = norm.weight.detach() + (1.0 if family.plus_one else 0.0)
    beta = norm.bias.detach() if getattr(norm, "bias", None) is not None else None
    head = m64.get_output_embeddings()
    unembed = head.weight.detach()
    head_bias = head.bias.detach() if getattr(head, "bias", None) is not None else None

    def read(vector: torch.Tensor, t: int, j: int) -> float:
        """A vector at position t through the norm's linear map at scale s[t], · W_U[j]."""
        if family.layernorm:
            vector = vector - vector.mean()
        return float((vector * s[t] * weight) @ unembed[j])

    start = seen["embed"][0] if family.input_norm else seen["in"][0]
    components = [start * carried[0]] + [
        v * carried[b] for b, block in enumerate(zip(*(seen[part] for part in family.parts)))
        for v in block]
    out: dict = {"attrs": [], "logits": [], "heads": []}
    for t, ids_t in enumerate(tokens):
        out["attrs"].append([[read(c[t], t, j) for j in ids_t] for c in components] + [[
            (float(beta @ unembed[j]) if beta is not None else 0.0)
            + (float(head_bias[j]) if head_bias is not None else 0.0) for j in ids_t]])
        normed = (centred[t] * s[t] * weight + (beta if beta is not None else 0.0))
        out["logits"].append([float(normed @ unembed[j]) + (float(head_bias[j])
                                                            if head_bias is not None else 0.0)
                              for j in ids_t])
    if family.projection:
        for block, z in zip(blocks, seen["z"]):
            projection = _get(block, family.projection)
            w = projection.weight.detach()
            w = w.T if family.conv1d else w  # (d, heads · d_head)
            heads = getattr(m64.config, "num_attention_heads", None) or m64.config.n_head
            width = w.shape[1] // heads
            out["heads"].append([[[read(z[t, h * width:(h + 1) * width]
                                        @ w[:, h * width:(h + 1) * width].T, t, j)
                                   for j in ids_t] for t, ids_t in enumerate(tokens)]
                                 for h in range(heads)])
    out["post_attention"] = [(start if b == 0 else seen["in"][b]) + seen[family.parts[0]][b]
                             for b in range(len(blocks))]
    cap = getattr(m64.config, "final_logit_softcapping", None)
    out["mid_probs"] = []  # final norm -> unembedding (-> softcap) of each post-attention state
    with torch.no_grad():
        for state in out["post_attention"]:
            logits = head(norm(state))
            logits = torch.tanh(logits / cap) * cap if cap else logits
            out["mid_probs"].append(torch.softmax(logits, -1))
    return out


def check(document: dict, expected: dict) -> None:
    """Every attribution within 1e-3·max(1, |logit|); components sum to the logit."""
    field = document["decomposition"]
    attrs = field["attrs"]
    assert len(attrs) == len(expected["attrs"][0])
    for t, logits in enumerate(expected["logits"]):
        for j, logit in enumerate(logits):
            bound = 1e-3 * max(1.0, abs(logit))
            ours = [attrs[c][t][j] for c in range(len(attrs))]
            theirs = [row[j] for row in expected["attrs"][t]]
            assert np.allclose(ours, theirs, rtol=0, atol=bound), (t, j, ours, theirs)
            assert abs(sum(ours) - logit) <= 1e-4 * max(1.0, abs(logit)), (t, j)
    if expected["heads"]:
        heads = field["heads"]["attrs"]
        for b, per_head in enumerate(expected["heads"]):
            for h, rows in enumerate(per_head):
                for t, values in enumerate(rows):
                    bound = [1e-3 * max(1.0, abs(v)) for v in expected["logits"][t]]
                    assert np.all(np.abs(np.subtract(heads[b][h][t], values)) <= bound)
            # Σ heads + the projection's bias = the block's attention attribution.
            bias = field["heads"]["bias"]
            for t in range(len(expected["logits"])):
                total = np.sum([heads[b][h][t] for h in range(len(per_head))], 0)
                if bias is not None:
                    total = total + np.asarray(bias[b][t])
                assert np.allclose(total, attrs[1 + 2 * b][t], atol=1e-3 * max(
                    1.0, max(map(abs, expected["logits"][t]))))


@pytest.fixture(scope="module")
def family_models(tmp_path_factory, tokenizers):
    """Tiny saved models of the five kinds, loaded as users load them."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("decomposition")
    loaded = {}

    def load(name: str):
        if name not in loaded:
            folder = root / name
            if name in tiny.ARCHITECTURES:
                tiny.save_tiny_model(name, folder, tokenizers["byte_level"])
            else:
                tiny.save_any_family(name, folder, tokenizers["byte_level"])
            loaded[name] = AutoModelForCausalLM.from_pretrained(folder).eval()
        return loaded[name]

    return load


@pytest.mark.parametrize("name", list(FAMILIES))
def test_attributions_equal_a_float64_computation(name, family_models, tokenizers):
    from lensreport.api import run_lens

    model = family_models(name)
    tokenizer = tokenizers["byte_level"]
    result = run_lens(model, tokenizer, TEXT, target=" capital",
                      targets={"words": [" fox", " the", " of"]})
    document = result.document
    field = document["decomposition"]
    assert field is not None, document.get("decomposition_note")
    blocks = model.config.num_hidden_layers
    assert field["components"] == ["embed"] + [f"{kind}.{b}" for b in range(1, blocks + 1)
                                               for kind in FAMILIES[name].names] + ["bias"]
    ids = document["input_ids"]
    tokens = field["token_ids"]
    for t, attributed in enumerate(tokens):  # final top-k, next token, target, group member
        wanted = set(document["topk_ids"][-1][t]) | {document["prompt"]["target_id"]}
        wanted |= {document["target_groups"][0]["top_ids"][-1][t][0]}
        if t + 1 < len(ids):
            wanted.add(ids[t + 1])
        assert wanted <= set(attributed) and len(set(attributed)) == len(attributed)
    expected = reference(model, FAMILIES[name], ids, tokens)
    check(document, expected)
    if len(FAMILIES[name].parts) != 2:
        assert field["heads"] is None and "every block adds an attention then an MLP" in \
            field["heads_note"]
    elif FAMILIES[name].projection is None:
        assert field["heads"] is None and "norm after the attention" in field["heads_note"]
    else:
        assert len(field["heads"]["attrs"]) == blocks


@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt_neox", "mamba", "rwkv"])
def test_sublayer_rows_read_the_stream_after_each_attention(name, family_models, tokenizers):
    """rows: sublayer: a row after each block's attention (depth b − 0.5), equal to final
    norm -> unembedding of the post-attention state computed by hand; block rows unchanged;
    parallel blocks (GPT-NeoX) and one-part blocks (Mamba) have none, and the document says
    why."""
    from lensreport.api import run_lens

    model, tokenizer = family_models(name), tokenizers["byte_level"]
    text = "The quick brown fox jumps over the lazy dog"
    blocks = run_lens(model, tokenizer, text, target=" the").document
    document = run_lens(model, tokenizer, text, target=" the", rows="sublayer").document
    layers = model.config.num_hidden_layers
    assert blocks["row_depths"] == list(range(layers + 1))
    if name in ("gpt_neox", "mamba"):
        assert document["row_depths"] == blocks["row_depths"]
        assert ("parallel attention" if name == "gpt_neox" else "block 1 adds 1 part (a "
                "one-part block has no state inside it)") in document["rows_note"]
        assert document["entropy"] == blocks["entropy"]
        return
    depths = document["row_depths"]
    assert depths == [0] + [d for b in range(1, layers + 1) for d in (b - 0.5, b)]
    assert document["layers"] == list(range(len(depths)))
    for field in ("entropy", "topk_ids", "target_prob", "next_token_rank", "kl_to_final"):
        assert [document[field][depths.index(d)] for d in blocks["row_depths"]] == \
            blocks[field], field
    expected = reference(model, FAMILIES[name], document["input_ids"],
                         document["decomposition"]["token_ids"])
    target = document["prompt"]["target_id"]
    for b, probs in enumerate(expected["mid_probs"], 1):
        row = depths.index(b - 0.5)
        entropy = -(probs * torch.log(probs)).sum(-1)
        assert np.allclose(document["entropy"][row], entropy.numpy(), atol=2e-4)
        assert np.allclose(document["target_prob"][row], probs[:, target].numpy(),
                           rtol=1e-3, atol=1e-6)
        top = [[float(probs[t, i]) for i in ids] for t, ids in enumerate(document["topk_ids"][row])]
        assert np.allclose(document["topk_probs"][row], top, rtol=1e-3, atol=1e-6)
        assert np.allclose(sorted(document["topk_probs"][row][0], reverse=True),
                           torch.topk(probs[0], 5).values.numpy(), rtol=1e-3, atol=1e-6)


def test_decompose_false_leaves_it_out(family_models, tokenizers):
    from lensreport.api import run_lens

    document = run_lens(family_models("llama"), tokenizers["byte_level"], "Hello world",
                        decompose=False).document
    assert document["decomposition"] is None


def test_a_block_that_does_not_add_up_gets_one_line(tokenizers):
    """Granite scales what each sub-layer adds (residual_multiplier): no module's output is
    the residual update, so no decomposition, one line saying so, and the lens still runs."""
    from transformers import AutoModelForCausalLM

    from lensreport.api import run_lens

    config = tiny.tiny_config("granite", len(tokenizers["byte_level"]))
    config.residual_multiplier = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    document = run_lens(model, tokenizers["byte_level"], "Hello world").document
    assert document["decomposition"] is None
    note = document["decomposition_note"]
    assert "block 1's residual update is not the sum" in note and "\n" not in note
    assert document["entropy"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m"])
def test_demo_attributions_equal_a_float64_computation(name, demo_site, demo_models):
    """The real demo models (Llama and Gemma-3 architectures) on the demo's fox prompt."""
    from lensreport.results.documents import loads

    document = loads((demo_site / "data" / name / "fox.json").read_text())
    model, _ = demo_models(name)
    family = FAMILIES["llama"] if name.startswith("smollm2") else FAMILIES["gemma2"]
    expected = reference(model, family, document["input_ids"],
                         document["decomposition"]["token_ids"])
    check(document, expected)


def test_manifest_settings_are_checked(tmp_path):
    """lens: {rows: sublayer, decompose: false} read at model level; a wrong value is one
    line at its place."""
    from conftest import write_manifest
    from lensreport.errors import LensReportError
    from lensreport.manifest import load_manifest

    manifest = load_manifest(write_manifest(tmp_path, """
        lens: {rows: sublayer}
        models:
          - {name: m, model: gpt2, lens: {decompose: false}}
        prompts:
          - {name: p, text: hi}
    """))
    assert manifest.models[0].lens.rows == "sublayer"
    assert manifest.models[0].lens.decompose is False
    path = write_manifest(tmp_path, """
        models:
          - {name: m, model: gpt2, lens: {rows: mid}}
        prompts:
          - {name: p, text: hi}
    """, "bad.yaml")
    with pytest.raises(LensReportError,
                       match=r"bad.yaml:2: model .m.\.lens\.rows: expected block or sublayer"):
        load_manifest(path)


def test_saved_documents_check_the_new_fields(family_models, tokenizers):
    """A saved document's decomposition and row_depths are checked field by field."""
    from lensreport.api import run_lens
    from lensreport.results.validation import InvalidDocument, check_prompt_document

    document = run_lens(family_models("llama"), tokenizers["byte_level"], "Hello world").document
    check_prompt_document(document)
    broken = copy.deepcopy(document)
    broken["decomposition"]["attrs"][2][1] = ["x"]
    with pytest.raises(InvalidDocument, match=r"decomposition.attrs\[2\]: expected per position"):
        check_prompt_document(broken)
    broken = copy.deepcopy(document)
    broken["decomposition"]["heads"]["attrs"][0][1][2][0] = float("nan")
    with pytest.raises(InvalidDocument, match=r"heads.attrs\[0\]\[1\]\[2\]\[0\]: not a finite"):
        check_prompt_document(broken)
    broken["decomposition"]["heads"]["attrs"][0][1][2][0] = 1e9  # past what fixed4 packs
    with pytest.raises(InvalidDocument, match=r"heads.attrs\[0\]\[1\]: expected per position "
                       r"a number from -214748 to 214748"):
        check_prompt_document(broken)
    broken = copy.deepcopy(document)
    broken["decomposition"]["heads"]["attrs"].pop()
    with pytest.raises(InvalidDocument, match=r"decomposition.heads.attrs: expected a list of 3"):
        check_prompt_document(broken)
    for components in (["embed", "attn.1", "mlp.1", "attn.3", "mlp.3", "mixer.2", "bias"],
                       ["embed", "attn.1", "attn.1", "mlp.2", "mixer.3", "bias"],
                       ["mixer.1", "attn.1", "mlp.1", "mlp.2", "mixer.3", "embed"]):
        broken = copy.deepcopy(document)  # blocks out of order, a part twice, ends swapped
        broken["decomposition"]["components"] = components
        with pytest.raises(InvalidDocument, match="decomposition.components: expected embed"):
            check_prompt_document(broken)
    mixed = copy.deepcopy(document)  # one, three and two parts: valid, heads by block
    mixed["decomposition"]["components"] = ["embed", "mixer.1", "mamba.2", "self_attn.2",
                                            "feed_forward.2", "attn.3", "bias"]
    mixed["decomposition"]["attrs"] = mixed["decomposition"]["attrs"][:7]
    check_prompt_document(mixed)
    broken = copy.deepcopy(document)
    broken["row_depths"] = broken["row_depths"][::-1]
    with pytest.raises(InvalidDocument, match="row_depths: expected"):
        check_prompt_document(broken)


def test_transformer_lens_attributes_the_same(family_models, tokenizers, tmp_path):
    """TransformerLens 4.3 (the peer in .venv/peers, run in its own process):
    decompose_resid + logit_attrs per component and stack_head_results + logit_attrs per
    head give our numbers (to the decimals kept), on GPT-2 (LayerNorm, Conv1D, biases) and
    Llama (RMSNorm)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO
    from lensreport.api import run_lens

    peers = REPO / ".venv" / "peers"
    assert (peers / "transformer_lens").is_dir(), "TransformerLens missing: run `make test`"
    names, fields, arguments = ["gpt2", "llama"], [], []
    for name in names:
        model = family_models(name)
        document = run_lens(model, tokenizers["byte_level"], TEXT, target=" capital").document
        job = tmp_path / f"{name}.json"
        job.write_text(json.dumps({"input_ids": document["input_ids"],
                                   "token_ids": document["decomposition"]["token_ids"]}))
        fields.append(document["decomposition"])
        arguments += [model.config._name_or_path, str(job), str(tmp_path / f"{name}.tl.json")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "tests" / "peers" / "stubs"), str(peers)])}
    peer = subprocess.run([sys.executable, str(REPO / "tests/peers/transformer_lens_dla.py"),
                           *arguments], capture_output=True, text=True, env=env, timeout=600)
    assert peer.returncode == 0, peer.stderr[-3000:]
    for name, field in zip(names, fields):
        theirs = json.loads((tmp_path / f"{name}.tl.json").read_text())
        embeds = [label for label in theirs["labels"] if "embed" in label]  # (+ pos_embed)
        assert theirs["labels"][len(embeds):] == [f"{b}_{kind}_out" for b in range(3)
                                                  for kind in ("attn", "mlp")]
        assert theirs["head_labels"] == [f"L{b}H{h}" for b in range(3) for h in range(4)]
        positions = len(field["token_ids"])
        assert theirs["width"] >= 5
        for j in range(theirs["width"]):
            attrs = np.asarray(theirs["attrs"][j])[:, 0]  # (their components, positions)
            peer_components = np.concatenate([attrs[:len(embeds)].sum(0, keepdims=True),
                                              attrs[len(embeds):]])
            ours = np.asarray([[values[t][j] for t in range(positions)]
                               for values in field["attrs"][:-1]])
            assert np.abs(ours - peer_components).max() < 2e-5, (name, j)
            heads = np.asarray([[[field["heads"]["attrs"][b][h][t][j]
                                  for t in range(positions)] for h in range(4)]
                                for b in range(3)]).reshape(12, positions)
            assert np.abs(heads - np.asarray(theirs["head_attrs"][j])[:, 0]).max() < 6e-5
            assert np.abs(heads).max() > 1e-2  # heads that write something


def test_the_final_norm_is_told_apart_on_a_centred_stream():
    """On a stream whose mean is zero at every position an RMSNorm and a LayerNorm (no bias)
    give the same output; the norm's map is still read as what the module is (it is also
    checked on the stream shifted along 1, which only a LayerNorm ignores)."""
    from lensreport.models.blocks import _norm_map
    from lensreport.models.heads import LensHead

    torch.manual_seed(0)
    stream = torch.randn(1, 6, 16)
    stream -= stream.mean(-1, keepdim=True)
    for module, centers in ((torch.nn.LayerNorm(16, bias=False), True),
                            (torch.nn.RMSNorm(16, eps=1e-5), False)):
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
        head = LensHead(("norm",), [module], "lm_head", torch.nn.Linear(16, 8, bias=False))
        assert _norm_map(head, stream, 1e-5).centers is centers, type(module).__name__
