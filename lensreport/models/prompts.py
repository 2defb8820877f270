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
        if self.groups:
            material["targets"] = [group.describe() for group in self.groups]
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


def encode_prompt(tokenizer: Any, request: PromptRequest, model_name: str, limit: int
                  ) -> EncodedPrompt:
    """A prompt's ids, chat template mask, target and group ids; PromptError when it is too
    long (with the tokens to generate), a target or group encodes to nothing, or a chat
    prompt meets a tokenizer without a chat template."""
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
        if not encoded.target_ids:
            raise PromptError(f"{where}.target {request.target!r} is not in the vocabulary "
                              f"of model '{model_name}'")
    encoded.group_ids = [group_token_ids(tokenizer, group, where, model_name)
                         for group in request.groups]
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


def group_token_ids(tokenizer: Any, group: TokenGroup, where: str, model_name: str
                    ) -> list[int]:
    """A group's ids, ascending and distinct; PromptError for a listed string that is not
    one token, or a group that is empty for this tokenizer."""
    place = f"{where}.targets.{group.name}"
    if group.word is not None:
        ids = word_token_ids(tokenizer, group.word)
        if not ids:
            raise PromptError(f"{place}: no token of model '{model_name}' spells a prefix of "
                              f"{group.word!r} (with or without a leading space)")
        return ids
    ids = set()
    for token in group.tokens:
        found = target_token_ids(tokenizer, token)
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
    content = [False] * len(rendered)
    start = 0
    for _, text in messages:
        found = rendered.find(text, start) if text else -1
        if found >= 0:
            content[found:found + len(text)] = [True] * len(text)
            start = found + len(text)
    mask = [not any(content[a:b]) for a, b in encoded["offset_mapping"]]
    return encoded["input_ids"], mask
