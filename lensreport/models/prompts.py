"""What a prompt asks for, and how it becomes token ids for one model: plain text or a chat
(the tokenizer's chat template with the generation prompt), a tracked target token, named
token groups, and how many tokens the model should generate after it.

Everything here needs the tokenizer alone, so a manifest is checked before any weights load;
generation itself runs in the engine. The engine and the notebook API build a
:class:`PromptRequest`; the manifest layer adds file:line to a :class:`PromptError`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from ..errors import LensReportError
from .tokens import plain_vocab, special_ids


# Bump when word_token_ids changes which tokens a word group holds (cached runs recompute).
WORD_EXPANSION = 1


class PromptError(LensReportError):
    """A prompt that does not fit a model (too long, a target or group not in its vocabulary,
    no chat template)."""


@dataclass(frozen=True)
class TokenGroup:
    """A named set of tokens whose probabilities are summed per cell: listed ``tokens`` (each
    one token), or every token spelling a prefix of ``word`` (Wendler et al. 2024)."""

    name: str
    tokens: tuple[str, ...] = ()
    word: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "word": self.word} if self.word is not None else \
            {"name": self.name, "tokens": list(self.tokens)}


@dataclass(frozen=True)
class PromptRequest:
    """One prompt as the engine takes it. ``messages`` (role, content) make it a chat prompt;
    ``generate`` is the number of tokens to generate greedily after it (0: none)."""

    name: str
    text: str
    slug: str = "prompt"
    target: str | None = None
    groups: tuple[TokenGroup, ...] = ()
    messages: tuple[tuple[str, str], ...] | None = None
    generate: int = 0

    def identity(self) -> dict[str, Any]:
        """What sets this prompt's numbers, for cache keys (plain prompts keep the keys they
        had before chats, groups and generation existed)."""
        material: dict[str, Any] = {"text": self.text, "target": self.target}
        if self.groups:  # word groups with the version of their expansion rule
            material["targets"] = [group.describe() | ({"expansion": WORD_EXPANSION}
                                                       if group.word is not None else {})
                                   for group in self.groups]
        if self.messages is not None:
            material["messages"] = [list(message) for message in self.messages]
        if self.generate:
            material["generate"] = {"max_new_tokens": self.generate, "do_sample": False}
        return material


@dataclass
class EncodedPrompt:
    """A prompt tokenized for one model and checked against its limits; ``input_ids`` grows
    by the generated tokens (from ``generated_from`` on) once the engine has generated."""

    request: PromptRequest
    input_ids: list[int]
    template_mask: list[bool] | None = None  # chat: True where a token is the template's
    target_ids: list[int] = field(default_factory=list)
    group_ids: list[list[int]] = field(default_factory=list)
    generated_from: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def target_id(self) -> int | None:
        return self.target_ids[0] if self.target_ids else None


def encode_prompt(tokenizer: Any, request: PromptRequest, model_name: str, limit: int,
                  vocab_rows: int | None = None) -> EncodedPrompt:
    """A prompt's ids, chat template mask, target and group ids; PromptError when it is too
    long (with the tokens to generate), a target or group encodes to nothing or to a token
    the unembedding has no row for (``vocab_rows``), or a chat prompt meets a tokenizer
    without a chat template."""
    where = f"prompt '{request.name}'"
    if request.messages is not None:
        ids, mask = chat_ids(tokenizer, request.messages, where, model_name)
    else:
        ids, mask = tokenizer(request.text)["input_ids"], None
    if len(ids) + request.generate > limit:
        generated = f" + {request.generate} to generate" if request.generate else ""
        raise PromptError(f"{where}: {len(ids)} tokens{generated} for model '{model_name}', "
                          f"which accepts at most {limit} here (context length and memory); "
                          "shorten the prompt")
    encoded = EncodedPrompt(request, ids, mask)
    if request.target is not None:
        encoded.target_ids = target_token_ids(tokenizer, request.target)
        if not encoded.target_ids or (vocab_rows is not None
                                      and encoded.target_ids[0] >= vocab_rows):
            raise PromptError(f"{where}.target {request.target!r} is not in the vocabulary "
                              f"of model '{model_name}'")
    encoded.group_ids = [group_token_ids(tokenizer, group, where, model_name, vocab_rows)
                         for group in request.groups]
    for index, first in enumerate(request.groups):
        for second, ids in zip(request.groups[index + 1:], encoded.group_ids[index + 1:]):
            shared = set(encoded.group_ids[index]) & set(ids)
            if shared:
                encoded.warnings.append(
                    f"{where}: token groups '{first.name}' and '{second.name}' share "
                    f"{len(shared)} token(s) for model '{model_name}', counted in both")
    return encoded


def target_token_ids(tokenizer: Any, target: str) -> list[int]:
    """A target's token ids; its single-token form where the text as written is several
    tokens only because of how the tokenizer spells a leading space (legacy SentencePiece,
    Llama-2 and Mistral v0.1, encodes " dog" as ['▁', '▁dog'] and "dog" as ['▁dog'])."""
    ids = tokenizer.encode(target, add_special_tokens=False)
    if len(ids) > 1 and target != target.lstrip(" "):
        stripped = tokenizer.encode(target.lstrip(" "), add_special_tokens=False)
        if len(stripped) == 1:
            return stripped
    return ids


def group_token_ids(tokenizer: Any, group: TokenGroup, where: str, model_name: str,
                    vocab_rows: int | None = None) -> list[int]:
    """A group's ids, ascending and distinct; PromptError for a listed string that is not
    one token (or one the unembedding's ``vocab_rows`` do not reach), or a group that is
    empty for this tokenizer. A word group leaves out tokens past the unembedding."""
    place = f"{where}.targets.{group.name}"
    if group.word is not None:
        ids = [i for i in word_token_ids(tokenizer, group.word)
               if vocab_rows is None or i < vocab_rows]
        if not ids:
            raise PromptError(f"{place}: no token of model '{model_name}' spells a prefix of "
                              f"{group.word!r} (with or without a leading space)")
        return ids
    ids = set()
    for token in group.tokens:
        found = target_token_ids(tokenizer, token)
        if len(found) == 1 and vocab_rows is not None and found[0] >= vocab_rows:
            raise PromptError(f"{place}: {token!r} is token {found[0]}, past the "
                              f"{vocab_rows} rows of model '{model_name}''s unembedding")
        if len(found) != 1:
            pieces = tokenizer.convert_ids_to_tokens(found)
            raise PromptError(f"{place}: {token!r} is {len(found)} tokens for model "
                              f"'{model_name}' ({', '.join(map(repr, pieces))}); list single "
                              "tokens, or give {word: ...} for every prefix of a word")
        ids.add(found[0])
    return sorted(ids)


_PREFIXES: "weakref.WeakKeyDictionary[Any, dict[str, list[int]]]" = weakref.WeakKeyDictionary()


def word_token_ids(tokenizer: Any, word: str) -> list[int]:
    """Ids of every token (special tokens aside) whose decoded text is ``word[:k]`` or
    ``" " + word[:k]`` for some k ≥ 1 — the token groups of Wendler et al. (2024), "Do
    Llamas Work in English?": a token the word's spelling can start with."""
    index = _PREFIXES.get(tokenizer)
    if index is None:
        index = {}
        specials = special_ids(tokenizer)
        for token_id, text in enumerate(plain_vocab(tokenizer)):
            if text and token_id not in specials:
                index.setdefault(text, []).append(token_id)
        _PREFIXES[tokenizer] = index
    spellings = {word[:k] for k in range(1, len(word) + 1)}
    spellings |= {" " + text for text in spellings}
    return sorted(i for text in spellings for i in index.get(text, ()))


def chat_ids(tokenizer: Any, messages: tuple[tuple[str, str], ...], where: str,
             model_name: str) -> tuple[list[int], list[bool] | None]:
    """Ids of ``messages`` in the tokenizer's chat template with the generation prompt (as
    ``apply_chat_template(..., add_generation_prompt=True)`` gives them), and per token
    whether it is the template's (no character of a message's content in it). The mask is
    None for a tokenizer without character offsets (a slow tokenizer)."""
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(f"{where}: model '{model_name}' has no chat template (its "
                          "tokenizer's chat_template is empty); drop chat/messages from the "
                          "prompt, or use a chat model")
    conversation = [{"role": role, "content": content} for role, content in messages]
    try:
        rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                                 tokenize=False)
    except Exception as exc:  # noqa: BLE001 - a template's own error (e.g. roles): one line
        raise PromptError(f"{where}: the chat template of model '{model_name}' rejects these "
                          f"messages: {str(exc).splitlines()[0][:200]}") from None
    # Tokenized as apply_chat_template(tokenize=True) does: the template writes its own
    # special tokens (BOS too), so the tokenizer adds none.
    if not getattr(tokenizer, "is_fast", False):
        return tokenizer(rendered, add_special_tokens=False)["input_ids"], None
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    spans = _content_spans(tokenizer, conversation, rendered)
    if spans is None:
        return encoded["input_ids"], None
    content = [False] * len(rendered)
    for start, stop in spans:
        content[start:stop] = [True] * (stop - start)
    specials = special_ids(tokenizer)
    mask = [token in specials or not any(content[a:b])
            for token, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    return encoded["input_ids"], mask


_SENTINEL = "\ue000{}\ue001"  # private-use characters: no template writes them itself


def _content_spans(tokenizer: Any, conversation: list[dict[str, str]], rendered: str
                   ) -> list[tuple[int, int]] | None:
    """Where each message's content lies in ``rendered``: the conversation is rendered again
    with a unique sentinel as each content, and the template's literal text between the
    sentinels is matched in order in the real rendering (so a template that trims content,
    or content that repeats the template's words, is still found). None where the template
    does not keep the sentinels (it transforms content)."""
    marked = [{**message, "content": _SENTINEL.format(index)}
              for index, message in enumerate(conversation)]
    try:
        skeleton = tokenizer.apply_chat_template(marked, add_generation_prompt=True,
                                                 tokenize=False)
    except Exception:  # noqa: BLE001 - a template that checks content: no mask
        return None
    pieces, rest = [], skeleton
    for index in range(len(conversation)):
        before, found, rest = rest.partition(_SENTINEL.format(index))
        if not found:
            return None
        pieces.append(before)
    pieces.append(rest)
    spans, position = [], 0
    for index, piece in enumerate(pieces[:-1]):
        if not rendered.startswith(piece, position):
            return None
        start = position + len(piece)
        following = pieces[index + 1]
        text = conversation[index]["content"].strip()
        # The content ends where the next literal piece starts, searched after the content
        # itself (which may contain that piece's text).
        hint = rendered.find(text, start) if text else start
        after = hint + len(text) if hint >= 0 else start
        stop = rendered.find(following, after) if following else after
        if stop < 0:
            return None
        spans.append((start, stop))
        position = stop
    return spans
