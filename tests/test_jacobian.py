"""The Jacobian lens: reading a reference-format file, fitting, sharding, errors; numbers
against independent computations written here (full Jacobians from
torch.autograd.functional.jacobian, the readout in float64)."""

from __future__ import annotations

from lensreport.results.documents import loads
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli, write_manifest

SKIP, CONTEXT = 4, 20
DOCUMENTS = ["The quick brown fox jumps over the lazy dog and runs far away.",
             "Hi",  # too short for a valid position: skipped, not counted
             "The capital of France is Paris, and the capital of Italy is Rome.",
             "one two three four five six seven eight nine ten eleven twelve",
             "def add(a, b):\n    return a + b\ndef sub(a, b):\n    return a - b"]


def _blocks(model):
    return model.model.layers if hasattr(model, "model") else model.transformer.h


def _final_norm(model):
    return model.model.norm if hasattr(model, "model") else model.transformer.ln_f


def independent_jacobians(model, ids: list[int], skip: int) -> dict[int, torch.Tensor]:
    """J_l = mean_{t∈V} Σ_{t'∈V} ∂h_final[t'] / ∂h_l[t] from full Jacobians, one layer at a
    time: the output of block l is replaced by the variable and the model run on from there."""
    blocks, layers = _blocks(model), model.config.num_hidden_layers
    tokens = torch.tensor([ids])
    valid = list(range(skip, len(ids) - 1))
    captured = {}
    norm_hook = _final_norm(model).register_forward_pre_hook(
        lambda module, args: captured.__setitem__("final", args[0]))
    with torch.no_grad():
        model(tokens)
    out = {}
    try:
        for layer in range(layers - 1):
            kept = {}
            keep = blocks[layer].register_forward_hook(
                lambda m, a, o: kept.__setitem__("h", (o[0] if isinstance(o, tuple) else o)))
            with torch.no_grad():
                model(tokens)
            keep.remove()

            def run_from(h: torch.Tensor, layer=layer) -> torch.Tensor:
                def replace(module, args, output):
                    if isinstance(output, tuple):
                        return (h[None],) + tuple(output[1:])
                    return h[None]
                handle = blocks[layer].register_forward_hook(replace)
                try:
                    model(tokens)
                finally:
                    handle.remove()
                return captured["final"][0]

            full = torch.autograd.functional.jacobian(run_from, kept["h"][0].detach())
            # full[t', i, t, j] = ∂h_final[t', i] / ∂h_l[t, j]
            summed = full[valid][:, :, valid].sum(0)  # (i, t, j)
            out[layer] = summed.mean(1).double()
    finally:
        norm_hook.remove()
    return out


@pytest.fixture(params=["llama", "gpt2"])
def fitted(request, tmp_path, tiny_models, weights_cache):
    folder = tiny_models(request.param, "sentencepiece" if request.param == "llama"
                         else "byte_level")
    (tmp_path / "corpus.txt").write_text("\n\n".join(DOCUMENTS) + "\n")
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: m, model: {folder}}}
        prompts:
          - {{name: fox, text: "The quick brown fox jumps over the lazy dog"}}
    """)
    return folder, manifest


def test_fit_equals_the_independent_estimator(fitted, tmp_path):
    folder, manifest = fitted
    out = tmp_path / "j.pt"
    # dim_batch 5 does not divide d_model 32: the last backward pass holds 2 dimensions.
    result = run_cli("fit-lens", manifest, "--model", "m", "--kind", "jacobian", "--corpus",
                     tmp_path / "corpus.txt", "--context", CONTEXT, "--skip-first", SKIP,
                     "--dim-batch", 5, "--out", out)
    assert result.returncode == 0, result.stderr
    payload = torch.load(out, weights_only=True)
    assert sorted(payload) == ["J", "d_model", "metadata", "n_prompts", "source_layers"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    layers, width = model.config.num_hidden_layers, model.config.hidden_size
    assert payload["d_model"] == width
    assert payload["source_layers"] == list(range(layers - 1))
    assert payload["metadata"]["skip_first"] == SKIP
    assert payload["metadata"]["context"] == CONTEXT
    assert all(matrix.dtype == torch.float16 for matrix in payload["J"].values())
    prompts = [tokenizer(text)["input_ids"][:CONTEXT] for text in DOCUMENTS]
    assert len(prompts[1]) <= SKIP + 1  # "Hi": skipped, not counted
    prompts = [ids for ids in prompts if len(ids) > SKIP + 1]
    assert payload["n_prompts"] == len(prompts) == len(DOCUMENTS) - 1
    assert f"a Jacobian lens from {len(prompts)} prompt(s)" in result.stderr
    expected = {layer: torch.zeros(width, width, dtype=torch.float64)
                for layer in range(layers - 1)}
    for ids in prompts:
        for layer, matrix in independent_jacobians(model, ids, SKIP).items():
            expected[layer] += matrix / len(prompts)
    for layer, matrix in expected.items():
        ours = payload["J"][layer].double()
        error = (ours - matrix).norm() / matrix.norm()
        assert error <= 5e-3, (layer, float(error))
        assert matrix.abs().max() > 0.1  # a real, non-trivial Jacobian


def test_shards_merge_into_the_single_fit_and_a_fit_resumes(fitted, tmp_path, monkeypatch):
    folder, manifest = fitted
    common = ["--model", "m", "--kind", "jacobian"]
    fit = common + ["--corpus", tmp_path / "corpus.txt", "--context", CONTEXT,
                    "--skip-first", SKIP]
    assert run_cli("fit-lens", manifest, *fit, "--out", tmp_path / "one.pt").returncode == 0
    for k in (1, 2, 3):
        result = run_cli("fit-lens", manifest, *fit, "--shard", f"{k}/3",
                         "--out", tmp_path / f"part{k}.pt")
        assert result.returncode == 0, result.stderr
    partial = run_cli("fit-lens", manifest, *common, "--merge", tmp_path / "part1.pt",
                      "--merge", tmp_path / "part2.pt", "--out", tmp_path / "bad.pt")
    assert partial.returncode == 1 and "exactly once" in partial.stderr
    merged = run_cli("fit-lens", manifest, *common, *[a for k in (1, 2, 3) for a in
                     ("--merge", tmp_path / f"part{k}.pt")], "--out", tmp_path / "merged.pt")
    assert merged.returncode == 0, merged.stderr
    one, many = (torch.load(tmp_path / name, weights_only=True) for name in
                 ("one.pt", "merged.pt"))
    assert one["n_prompts"] == many["n_prompts"] == len(DOCUMENTS) - 1
    for layer in one["J"]:
        assert torch.allclose(one["J"][layer].float(), many["J"][layer].float(), atol=1e-3)

    # Interrupted after two prompts (checkpoints every prompt), then run again: resumed.
    from lensreport.lens.fit import jacobian as fitting

    real, calls = fitting.prompt_jacobians, []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fitting, "prompt_jacobians", interrupted)
    again = run_cli("fit-lens", manifest, *fit, "--out", tmp_path / "resumed.pt",
                    "--checkpoint-every", 1)
    assert again.returncode != 0
    assert (tmp_path / "resumed.pt.checkpoint").is_file()
    monkeypatch.setattr(fitting, "prompt_jacobians", real)
    again = run_cli("fit-lens", manifest, *fit, "--out", tmp_path / "resumed.pt",
                    "--checkpoint-every", 1)
    assert again.returncode == 0 and "resuming after 2 prompt(s)" in again.stderr
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed["n_prompts"] == len(DOCUMENTS) - 1
    for layer in one["J"]:
        assert torch.equal(one["J"][layer], resumed["J"][layer])
    assert not (tmp_path / "resumed.pt.checkpoint").exists()


def _reference_file(path: Path, layers: int, width: int, seed: int = 0,
                    **extra) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    matrices = {layer: (torch.eye(width) + 0.3 * torch.randn(width, width,
                                                              generator=generator)).half()
                for layer in range(layers - 1)}
    torch.save({"J": matrices, "n_prompts": 3, "source_layers": list(range(layers - 1)),
                "d_model": width, **extra}, path)
    return {layer: matrix.float() for layer, matrix in matrices.items()}


@pytest.mark.parametrize("name", ["llama", "gemma2"])  # gemma2: softcapped logits
def test_readout_of_a_reference_file_equals_an_independent_computation(
        name, tmp_path, tiny_models, weights_cache):
    folder = tiny_models(name, "sentencepiece")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    layers, width = model.config.num_hidden_layers, model.config.hidden_size
    matrices = _reference_file(tmp_path / "lens.pt", layers, width)
    manifest = write_manifest(tmp_path, f"""
        lens: {{kinds: [logit, jacobian], jacobian: lens.pt}}
        models:
          - {{name: m, model: {folder}}}
        prompts:
          - {{name: fox, text: "The quick brown fox jumps over the lazy", target: " dog"}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    document = loads((tmp_path / "site/data/m/fox.jacobian.json").read_text())
    logit = loads((tmp_path / "site/data/m/fox.json").read_text())
    assert document["lens"]["kind"] == "jacobian" and document["lens"]["rows"] == \
        list(range(1, layers + 1))
    assert document["lens"]["jacobian"]["source"] == "lens.pt"
    for field in ("entropy", "kl_to_final", "topk_ids", "topk_probs", "next_token_prob",
                  "target_prob", "target_rank"):
        assert document[field][0] is None, field  # no matrix for the embeddings row
    assert all(probs[0] is None for probs in document["tracked_probs"])
    assert document["entropy"][layers] == logit["entropy"][layers]  # the model's own logits

    ids = torch.tensor([document["input_ids"]])
    softcap = getattr(model.config, "final_logit_softcapping", None)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        for row in range(1, layers):
            read = model.model.norm(hidden[row][0] @ matrices[row - 1].T)
            logits = model.lm_head.weight.double() @ read.double().T  # (vocab, T)
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            logp = torch.log_softmax(logits, 0)
            entropy = -(logp.exp() * logp).sum(0)
            assert document["entropy"][row] == pytest.approx(entropy.tolist(), abs=2e-3)
            best = logp.max(0).values
            for position, top1 in enumerate(document["topk_ids"][row]):
                runner_up = logp[:, position].topk(2).values[1]
                if best[position] - runner_up > 1e-3:  # never judge a near-tie
                    assert top1[0] == int(logp[:, position].argmax())
            target = model.config.vocab_size and document["prompt"]["target_id"]
            assert document["target_prob"][row] == pytest.approx(
                logp[target].exp().tolist(), rel=2e-3, abs=1e-6)


def test_a_lens_that_does_not_fit_is_a_manifest_error(tmp_path, tiny_models, weights_cache):
    folder = tiny_models("llama", "sentencepiece")
    _reference_file(tmp_path / "wide.pt", 3, 48)
    _reference_file(tmp_path / "deep.pt", 5, 32)
    _reference_file(tmp_path / "other.pt", 3, 32, metadata={"model_id": "someone/else"})
    for name, message in (("wide.pt", "is for d_model 48, the model's is 32"),
                          ("deep.pt", "layer(s) [2, 3], outside 0 … 1"),
                          ("missing.pt", "no such file")):
        manifest = write_manifest(tmp_path, f"""
            models:
              - name: m
                model: {folder}
                lens: {{kinds: [logit, jacobian], jacobian: {name}}}
            prompts:
              - {{name: fox, text: "The quick brown fox"}}
        """)
        result = run_cli("build", manifest)
        assert result.returncode == 2, result.stderr
        assert f"{manifest}:2: model 'm'.lens.jacobian: " in result.stderr, result.stderr
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "site").exists()
    manifest.write_text(manifest.read_text().replace("missing.pt", "other.pt"))
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert "was fitted for 'someone/else', not for model 'm'" in result.stderr
    strict = run_cli("build", manifest, "--strict")
    assert strict.returncode != 0
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file")
    manifest.write_text(manifest.read_text().replace("other.pt", "corrupt.pt"))
    result = run_cli("build", manifest)
    assert result.returncode != 0 and "Jacobian lens" in result.stderr
    assert "cannot read it" in result.stderr and "Traceback" not in result.stderr


def test_published_lenses_are_looked_up_and_fail_clearly_offline(tmp_path):
    from lensreport.errors import LensReportError
    from lensreport.lens import jacobian_format
    from lensreport.lens.kinds import JacobianLens

    assert jacobian_format.published_file("google/gemma-3-270m") == \
        "gemma-3-270m/jlens/Salesforce-wikitext/gemma-3-270m_jacobian_lens.pt"
    assert jacobian_format.published_file("GPT2") == \
        "gpt2-small/jlens/Salesforce-wikitext/gpt2_jacobian_lens.pt"
    with pytest.raises(LensReportError) as caught:
        JacobianLens.for_model("google/gemma-3-270m").identity()  # HF_HUB_OFFLINE=1 here
    message = str(caught.value)
    assert "neuronpedia/jacobian-lens" in message and "gemma-3-270m_jacobian_lens.pt" in message
    assert "\n" not in message
    with pytest.raises(LensReportError, match="no published Jacobian lens for 'my/model'"):
        JacobianLens.for_model("my/model").identity()


def test_checkpoint_form_reads_as_the_mean(tmp_path):
    from lensreport.lens import jacobian_format

    sums = {0: torch.full((4, 4), 6.0), 1: torch.eye(4) * 3}
    jacobian_format.write_checkpoint(tmp_path / "c.pt", sums, n_done=3, next_idx=5,
                                     target_layer=2, skip_first=16, metadata={"corpus": "x"})
    artifact = jacobian_format.read(tmp_path / "c.pt")
    assert artifact.n_prompts == 3 and artifact.d_model == 4
    assert torch.equal(artifact.matrices[0], torch.full((4, 4), 2.0))
    assert torch.equal(artifact.matrices[1], torch.eye(4))
    assert artifact.metadata["skip_first"] == 16 and artifact.metadata["target_layer"] == 2


def test_run_lens_reads_a_jacobian_lens_file(tmp_path, tiny_models):
    from lensreport import run_lens

    folder = tiny_models("llama", "sentencepiece")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    layers, width = model.config.num_hidden_layers, model.config.hidden_size
    _reference_file(tmp_path / "lens.pt", layers, width)
    result = run_lens(model, tokenizer, "The quick brown fox", lens="jacobian",
                      jacobian=tmp_path / "lens.pt")
    assert result.document["lens"]["kind"] == "jacobian"
    assert result.document["entropy"][0] is None
    assert all(not math.isnan(v) for v in result.document["entropy"][1])
    with pytest.raises(Exception, match="jacobian= is a source for lens='jacobian'"):
        run_lens(model, tokenizer, "The quick brown fox", jacobian=tmp_path / "lens.pt")


def test_manifest_hub_spec_and_its_errors(tmp_path):
    from lensreport.errors import LensReportError
    from lensreport.manifest import load_manifest

    manifest = write_manifest(tmp_path, """
        lens:
          kinds: [logit, jacobian]
          jacobian: {repo: me/lenses, file: gpt2/j.pt, revision: v1}
        models:
          - {name: m, model: gpt2}
        prompts:
          - {name: fox, text: "The quick brown fox"}
    """)
    source = load_manifest(manifest).models[0].lens.jacobian
    assert (source.repo, source.filename, source.revision, source.file) == \
        ("me/lenses", "gpt2/j.pt", "v1", None)
    assert source.describe("gpt2") == "me/lenses, gpt2/j.pt@v1"
    manifest.write_text(manifest.read_text().replace(", file: gpt2/j.pt", ""))
    with pytest.raises(LensReportError, match=rf"{manifest}:3: lens.jacobian: a repo needs "
                                              r"the file in it"):
        load_manifest(manifest)
    manifest.write_text(manifest.read_text().replace("revision: v1", "branch: v1"))
    with pytest.raises(LensReportError, match=rf"{manifest}:3: .*branch"):
        load_manifest(manifest)


def test_unfinished_shards_and_changed_settings_are_refused(fitted, tmp_path, monkeypatch):
    from lensreport.lens.fit import jacobian as fitting

    folder, manifest = fitted
    fit = ["--model", "m", "--kind", "jacobian", "--corpus", tmp_path / "corpus.txt",
           "--context", CONTEXT, "--skip-first", SKIP, "--checkpoint-every", 1]
    real, calls = fitting.prompt_jacobians, []

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fitting, "prompt_jacobians", interrupted)
    assert run_cli("fit-lens", manifest, *fit, "--shard", "1/2",
                   "--out", tmp_path / "p1.pt").returncode != 0
    monkeypatch.setattr(fitting, "prompt_jacobians", real)
    assert run_cli("fit-lens", manifest, *fit, "--shard", "2/2",
                   "--out", tmp_path / "p2.pt").returncode == 0
    merged = run_cli("fit-lens", manifest, "--model", "m", "--kind", "jacobian", "--merge",
                     tmp_path / "p1.pt", "--merge", tmp_path / "p2.pt", "--out", tmp_path / "m.pt")
    assert merged.returncode == 1 and "this shard has not finished" in merged.stderr
    assert not (tmp_path / "m.pt").exists()
    other = run_cli("fit-lens", manifest, *fit, "--shard", "1/2", "--prompts", 2,
                    "--out", tmp_path / "p1.pt")
    assert other.returncode == 1 and "was written with other settings" in other.stderr
    payload = torch.load(tmp_path / "p2.pt", weights_only=True)
    assert payload["complete"] is True and payload["metadata"]["fit_dtype"] == "float32"
    assert payload["metadata"]["model_revision"] is None  # a local folder has no commit
    assert payload["metadata"]["prompts"] == 64 and payload["metadata"]["corpus_digest"]
    assert all(m.device.type == "cpu" for m in payload["jacobian_sum"].values())
