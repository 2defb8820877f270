"""Token groups, chat prompts and generated text: numbers against independent computations,
ids against transformers' own generate and chat template, and manifest errors."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import run_cli, write_manifest
from lensreport.results.documents import loads
from lensreport.models.prompts import PromptRequest, TokenGroup, word_token_ids
from lensreport.models.tokens import special_ids
from tiny import CHAT_TEMPLATE, save_chat_model



def expanded_by_definition(tokenizer, word: str) -> list[int]:
    """The README's definition, by brute force: every non-special token whose decoded text is
    word[:k] or " " + word[:k] for some k >= 1."""
    spellings = {word[:k] for k in range(1, len(word) + 1)}
    spellings |= {" " + s for s in spellings}
    specials = special_ids(tokenizer)
    return [i for i in range(len(tokenizer))
            if i not in specials and tokenizer.decode([i]) in spellings]


def float64_rows(model, ids: list[int]):
    """Per-row float64 probabilities by hand: final norm -> unembedding -> softmax (the last
    row is the model's logits)."""
    with torch.no_grad():
        output = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        norm = model.model.norm.double()
        weight = model.get_output_embeddings().weight.double()
        rows = [torch.softmax(norm(h.double())[0] @ weight.T, -1)
                for h in output.hidden_states[:-1]]
        rows.append(torch.softmax(output.logits[0].double(), -1))
        model.model.norm.float()
    return rows


def test_word_groups_follow_the_definition(demo_models, tiny_models):
    from transformers import AutoTokenizer

    _, smol = demo_models("smollm2-135m")
    for word in ("dog", "chien", "Paris"):
        assert word_token_ids(smol, word) == expanded_by_definition(smol, word), word
    assert {smol.decode([i]) for i in word_token_ids(smol, "chien")} >= {" ch", "ch", "c"}
    sentencepiece = AutoTokenizer.from_pretrained(tiny_models("llama", "sentencepiece"))
    for word in ("quick", "école"):
        assert word_token_ids(sentencepiece, word) == \
            expanded_by_definition(sentencepiece, word), word


def test_demo_groups_equal_a_float64_computation(demo_site, demo_models):
    """The real SmolLM2 through the whole build: each group's summed probability within 1e-3
    of float64 and its best rank exact up to near-ties (never judged at one)."""
    model, tokenizer = demo_models("smollm2-135m")
    document = loads((demo_site / "data/smollm2-135m/translation.json").read_text())
    groups = {g["name"]: g for g in document["target_groups"]}
    assert list(groups) == ["english", "french"]
    assert groups["english"]["ids"] == word_token_ids(tokenizer, "dog")
    assert groups["french"]["ids"] == word_token_ids(tokenizer, "chien")
    rows = float64_rows(model, document["input_ids"])
    # The demo reads sub-layer rows too: the block rows (depths 0 … 30) are checked here,
    # the rows after each attention in test_decomposition.py.
    assert len(rows) == 31 and document["row_depths"][::2] == list(range(31))
    checked_ranks = 0
    for group in groups.values():
        ids = torch.tensor(group["ids"])
        for depth, probs in enumerate(rows):
            layer = document["row_depths"].index(depth)
            expected = probs[:, ids].sum(-1)
            got = torch.tensor(group["prob"][layer], dtype=torch.float64)
            assert torch.allclose(got, expected, atol=1e-3), (group["name"], layer)
            best = probs[:, ids].max(-1).values
            for position, rank in enumerate(group["rank"][layer]):
                p = probs[position]
                # Tokens clearly above the best member count; near-ties may go either way.
                above = int((p > best[position] * (1 + 1e-3)).sum())
                tied = int((p > best[position] * (1 - 1e-3)).sum()) - 1
                assert above + 1 <= rank <= tied + 1, (group["name"], layer, position)
                checked_ranks += above == tied
            members = group["top_ids"][layer][-1]
            assert set(members) <= set(group["ids"]) and len(members) == min(3, len(ids))
            shown = group["top_probs"][layer][-1]
            assert shown == sorted(shown, reverse=True)
            assert shown[0] == pytest.approx(float(probs[-1, ids].max()), abs=1e-3)
    assert checked_ranks > 100  # most ranks were exact checks, not near-tie passes


def test_generation_equals_transformers_generate(demo_site, demo_models):
    """generate: N gives generate(do_sample=False, max_new_tokens=N)'s ids, plain and in the
    chat template; the build's chat prompt too."""
    import lensreport

    model, tokenizer = demo_models("smollm2-135m")
    question = "What is the capital of France?"
    for chat in (False, True):
        result = lensreport.run_lens(model, tokenizer, question, chat=chat, generate=8,
                                     targets={"paris": [" Paris", "Paris"]})
        document = result.document
        assert result.group_names == ["paris"] and result.generated_from is not None
        assert result.group_prob("paris").shape == result.entropy.shape
        assert (result.group_rank("paris") >= 1).all()
        start = document["generated_from"]
        prompt_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True,
            tokenize=True, return_dict=False) if chat else tokenizer(question)["input_ids"]
        assert document["input_ids"][:start] == list(prompt_ids)
        expected = model.generate(torch.tensor([prompt_ids]), do_sample=False,
                                  max_new_tokens=8)[0].tolist()
        assert document["input_ids"] == expected and len(expected) - start <= 8
        assert (document["template_mask"] is not None) == chat
        assert document["prompt"]["generate"] == {"max_new_tokens": 8, "do_sample": False}
    # The template's tokens are marked, the question's are not, generated ones are not.
    mask = document["template_mask"]
    content = [i for i, templated in enumerate(mask[:start]) if not templated]
    assert tokenizer.decode([document["input_ids"][i] for i in content]).strip() == question
    assert not any(mask[start:]) and sum(mask) > 5
    built = json.loads((demo_site / "data/smollm2-135m/chat.json").read_text())
    start = built["generated_from"]
    expected = model.generate(torch.tensor([built["input_ids"][:start]]), do_sample=False,
                              max_new_tokens=12)[0].tolist()
    assert built["input_ids"] == expected
    assert built["prompt"]["messages"] == [{"role": "user", "content": question}]
    assert not (demo_site / "data/gemma-3-270m/chat.json").exists()  # models: [smollm2-135m]


def test_prompt_identity_keys(tmp_path):
    """Plain prompts keep their old keys; groups, chats and generation each change a key."""
    plain = PromptRequest("p", "text", target=" dog")
    assert plain.identity() == {"text": "text", "target": " dog"}
    keys = {json.dumps(r.identity(), sort_keys=True) for r in (
        plain, PromptRequest("p", "text", target=" dog", generate=4),
        PromptRequest("p", "text", target=" dog", generate=5),
        PromptRequest("p", "text", target=" dog", messages=(("user", "text"),)),
        PromptRequest("p", "text", target=" dog", groups=(TokenGroup("a", word="dog"),)))}
    assert len(keys) == 5


def test_tiny_build_with_groups_chat_generation_and_corpus_groups(tmp_path, tiny_models,
                                                                  weights_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_chat_model(tiny_models("llama"), tmp_path / "chat-model")
    (tmp_path / "corpus.txt").write_text("The quick brown fox.\n\nquick quick, the fox.\n")
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: tiny, model: {folder}}}
        prompts:
          - name: msgs
            messages:
              - {{role: system, content: "Be brief."}}
              - {{role: user, content: "The quick brown fox"}}
            generate: {{max_new_tokens: 4}}
            targets:
              quick: {{word: quick}}
              listed: [" the", " fox"]
        corpora:
          - name: c
            path: corpus.txt
            max_tokens: 12
            context: 8
            targets:
              quick: {{word: quick}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "site/data/tiny/msgs.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    start = document["generated_from"]
    assert document["input_ids"][:start] == tokenizer.apply_chat_template(
        document["prompt"]["messages"], add_generation_prompt=True, tokenize=True,
        return_dict=False)
    assert document["prompt"]["text"] == "system: Be brief.\nuser: The quick brown fox"
    assert [g["name"] for g in document["target_groups"]] == ["quick", "listed"]
    # Corpus group curve: mean summed probability per row over the scored positions.
    curves = json.loads((tmp_path / "site/data/corpora/c/tiny.json").read_text())
    [group] = curves["target_groups"]
    ids = torch.tensor(word_token_ids(tokenizer, "quick"))
    assert group["ids"] == ids.tolist() and group["prob_ci"] is None  # 2 documents
    sums, scored = torch.zeros(len(curves["layers"]), dtype=torch.float64), 0
    for text in ("The quick brown fox.", "quick quick, the fox."):
        window = tokenizer(text)["input_ids"][:8]
        window = window[:12 - scored + 1]
        with torch.no_grad():
            output = model(input_ids=torch.tensor([window]), output_hidden_states=True)
            weight = model.get_output_embeddings().weight.double()
            norm = model.model.norm
            for row, hidden in enumerate(output.hidden_states):
                logits = (norm(hidden)[0].double() @ weight.T) if row < len(sums) - 1 else \
                    output.logits[0].double()
                sums[row] += torch.softmax(logits, -1)[:-1, ids].sum()
        scored += len(window) - 1
        if scored >= 12:
            break
    assert torch.allclose(torch.tensor(group["prob"], dtype=torch.float64), sums / scored,
                          atol=1e-5)


@pytest.mark.parametrize("entry, message", [
    ('{name: p, text: "the fox", targets: {animals: [" the quick"]}}',
     r"targets.animals: ' the quick' is \d tokens for model 'tiny'"),
    ('{name: p, text: "the fox", targets: {zz: {word: "☃☃"}}}',
     r"targets.zz: no token of model 'tiny' spells a prefix of '☃☃'"),
    ('{name: p, text: "the fox", chat: true}', r"model 'tiny' has no chat template"),
])
def test_tokenizer_checks_at_validate(entry, message, tmp_path, tiny_models):
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: tiny, model: {tiny_models("llama")}}}
        prompts:
          - {entry}
    """)
    result = run_cli("validate", manifest)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert re.search(rf"prompts.yaml:\d+: prompt 'p'.*{message}", result.stderr), \
        result.stderr


@pytest.mark.parametrize("entry, message", [
    ('{name: p, text: "x", messages: [{role: user, content: "x"}]}', "not both"),
    ('{name: p, messages: [{role: user}]}', "messages[0]: missing required key 'content'"),
    ('{name: p, text: "x", generate: 0}', "generate: expected a number of tokens from 1"),
    ('{name: p, text: "x", generate: {max_tokens: 3}}', "unknown key 'max_tokens'"),
    ('{name: p, text: "x", targets: {a: []}}', "targets.a: expected a non-empty list"),
    ('{name: p, text: "x", targets: {a: {words: dog}}}', "unknown key 'words'"),
    ('{name: p, text: "x", models: [nope]}', "models: no model named 'nope'"),
])
def test_manifest_errors_for_prompt_options(entry, message, tmp_path):
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: tiny, model: some/model}}
        prompts:
          - {entry}
    """)
    result = run_cli("validate", manifest)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "prompts.yaml:" in result.stderr and message in result.stderr, result.stderr


def test_generation_is_plain_greedy_whatever_the_generation_config(tiny_models):
    """A generation_config that samples, beams and penalises repeats is ignored: every
    generated token is the argmax of the model's logits (checked by a loop by hand, only
    where the top two logits are clearly apart)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lensreport

    folder = tiny_models("llama")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.generation_config.update(do_sample=True, temperature=0.7, top_k=3, num_beams=2,
                                   repetition_penalty=1.5, no_repeat_ngram_size=2,
                                   min_new_tokens=6, eos_token_id=None)
    document = lensreport.run_lens(model, tokenizer, "one two three", generate=6).document
    start = document["generated_from"]
    ids = document["input_ids"][:start]
    checked = 0
    with torch.no_grad():
        for generated in document["input_ids"][start:]:
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2).values
            if float(top[0] - top[1]) > 1e-3:
                assert generated == int(logits.argmax())
                checked += 1
            ids = ids + [generated]
    assert len(document["input_ids"]) - start == 6 and checked >= 4
    assert model.generation_config.repetition_penalty == 1.5  # restored


@pytest.mark.parametrize("template, messages, content", [
    # The content repeats words of the template's default system prompt and of role names.
    (CHAT_TEMPLATE.replace("{% for m", "<|im_start|>system\nYou are an AI assistant by "
                           "Hugging Face<|im_end|>\n{% for m"),
     [("user", "Hugging Face")], ["Hugging Face"]),
    (CHAT_TEMPLATE, [("user", "user"), ("assistant", "a")], ["user", "a"]),
    # A template that trims content (Llama-3, Gemma): the YAML block's newline is dropped.
    (CHAT_TEMPLATE.replace("{{ m['content'] }}", "{{ m['content'] | trim }}"),
     [("user", "the fox\n")], ["the fox"]),
])
def test_template_mask_marks_exactly_the_contents(template, messages, content, tiny_models):
    from transformers import AutoTokenizer

    from lensreport.models.prompts import chat_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("llama"))
    tokenizer.chat_template = template
    ids, mask = chat_ids(tokenizer, tuple(messages), "prompt 'p'", "tiny")
    assert ids == tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], add_generation_prompt=True,
        tokenize=True, return_dict=False)
    shown = tokenizer.decode([i for i, templated in zip(ids, mask) if not templated])
    assert shown == "".join(content)
    # Every special token is the template's.
    assert all(templated for i, templated in zip(ids, mask) if i in special_ids(tokenizer))


def test_tokens_past_the_unembedding_never_reach_the_lens(tiny_models):
    from transformers import AutoTokenizer

    from lensreport.models.prompts import PromptError, encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("llama"))
    tokenizer.add_tokens(["quixotic"])
    rows = len(tokenizer) - 1  # the unembedding has no row for the added token
    word = PromptRequest("p", "the fox", groups=(TokenGroup("q", word="quixotic"),))
    ids = encode_prompt(tokenizer, word, "tiny", 100, rows).group_ids[0]
    assert ids and max(ids) < rows
    listed = PromptRequest("p", "the fox", groups=(TokenGroup("q", tokens=("quixotic",)),))
    with pytest.raises(PromptError, match="past the .* rows"):
        encode_prompt(tokenizer, listed, "tiny", 100, rows)
    with pytest.raises(PromptError, match="not in the vocabulary"):
        encode_prompt(tokenizer, PromptRequest("p", "x", target="quixotic"), "tiny", 100, rows)
