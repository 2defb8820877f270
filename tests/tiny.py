"""Tiny random models of many architectures, saved with save_pretrained like a user's checkpoint.

Norm weights and biases are moved off their defaults and the unembedding is scaled, so a
second normalisation is never a no-op and distributions are peaked: with default init such
bugs would hide behind near-uniform outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "one two three four five six seven eight nine ten",
    "def add(a, b):\n    return a + b\n",
    "Hello world! true True TRUE false\tTabs and\nnewlines.",
    "Les élèves étudient à l'école. Ünïcödé, 日本語, emoji 🦊.",
] * 20

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=128)

ARCHITECTURES: dict[str, dict] = {
    "gpt2": dict(n_embd=32, n_layer=3, n_head=4, n_positions=128),
    "gptj": dict(n_embd=32, n_layer=3, n_head=4, n_positions=128, rotary_dim=4),
    "gpt_neox": dict(SMALL),
    "opt": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=64,
                max_position_embeddings=128, word_embed_proj_dim=32),
    "opt-project-out": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=64,
                            max_position_embeddings=128, word_embed_proj_dim=16,
                            do_layer_norm_before=False),
    "bloom": dict(hidden_size=32, n_layer=3, n_head=4),
    "falcon": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                   new_decoder_architecture=True, num_kv_heads=2),
    "llama": dict(SMALL, num_key_value_heads=2),
    "mistral": dict(SMALL, num_key_value_heads=2),
    "qwen2": dict(SMALL, num_key_value_heads=2),
    "qwen3": dict(SMALL, num_key_value_heads=2, head_dim=8),
    "phi": dict(SMALL),
    "phi3": dict(SMALL, pad_token_id=0),
    "gemma": dict(SMALL, num_key_value_heads=1, head_dim=8),
    "gemma2": dict(SMALL, num_key_value_heads=1, head_dim=8, final_logit_softcapping=3.0,
                   query_pre_attn_scalar=8),
    "gemma3_text": dict(SMALL, num_key_value_heads=1, head_dim=8, final_logit_softcapping=4.0,
                        query_pre_attn_scalar=8),
    "stablelm": dict(SMALL, num_key_value_heads=4),
    "starcoder2": dict(SMALL, num_key_value_heads=2),
}


def _train(pre_tokenizer, decoder, special: list[str], vocab_size: int = 400,
           byte_fallback: bool = False) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(byte_fallback=byte_fallback,
                                     unk_token=None if not byte_fallback else "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoder
    alphabet = pre_tokenizers.ByteLevel.alphabet() if not byte_fallback else []
    if byte_fallback:
        special = special + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + (256 if byte_fallback else 0),
                                  special_tokens=special, initial_alphabet=alphabet,
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2 style: 'Ġ' for a leading space, every byte representable."""
    raw = _train(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(),
                 ["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """Llama/Gemma style: '▁' for a space, <0xNN> byte fallback, a <bos> token."""
    raw = _train(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
                 decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                 ["<unk>", "<bos>", "<eos>"], byte_fallback=True)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")


def _model_type(name: str) -> str:
    return name.split("-")[0]


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move norms off identity and sharpen the head, so lens bugs change the numbers."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            lowered = type(module).__name__.lower()
            if "norm" in lowered or "ln" in module_name.split(".")[-1]:
                for param_name, param in module.named_parameters(recurse=False):
                    noise = torch.rand(param.shape, generator=generator)
                    if param_name == "weight":
                        param.copy_(0.5 + 1.5 * noise)
                    else:
                        param.copy_(noise - 0.5)
        head = model.get_output_embeddings()
        head.weight.mul_(8.0)
        if getattr(head, "bias", None) is not None:
            head.bias.copy_(torch.rand(head.bias.shape, generator=generator) - 0.5)


def save_tiny_model(name: str, folder: Path, tokenizer: PreTrainedTokenizerFast,
                    seed: int = 0) -> Path:
    torch.manual_seed(seed)
    kwargs = dict(ARCHITECTURES[name])
    kwargs.setdefault("vocab_size", len(tokenizer))
    config = AutoConfig.for_model(_model_type(name), **kwargs)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_config(config)
    perturb(model, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- Any family, from its default config ---------------------------------------------------

# Shrinks a family's default config; applied to the attributes a config has (and where the
# config accepts them), so one table serves every decoder family transformers ships. The
# state-space sizes keep Mamba-2's rule (hidden_size * expand = heads * head_dim).
TINY_SIZES = dict(
    hidden_size=32, n_embd=32, d_model=32, num_hidden_layers=3, n_layer=3, num_layers=3,
    num_blocks=3, decoder_layers=3, encoder_layers=3, num_attention_heads=4, n_head=4,
    decoder_attention_heads=4, encoder_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, n_inner=64, ffn_dim=64, decoder_ffn_dim=64, encoder_ffn_dim=64,
    head_dim=8, max_position_embeddings=128, n_positions=128, num_experts=4,
    num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
    shared_expert_intermediate_size=32, n_shared_experts=1, kv_lora_rank=16, q_lora_rank=16,
    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, rotary_dim=4, pad_token_id=0,
    num_heads=4, expand=1, n_groups=1, state_size=16, mamba_n_heads=4, mamba_n_groups=1,
    mamba_d_state=16, n_mamba_heads=4, embedding_size=32, embedding_dim=32, lru_width=32,
    attn_layer_period=2, attn_layer_offset=1, rescale_every=1)
# Logit post-processing is set away from its default wherever a family has it.
POSTPROCESSING = dict(final_logit_softcapping=3.0, logit_scale=0.5, logits_scaling=4.0)
# Configs below the top level that are not the language model (vision, audio towers).
_SUBCONFIG_TYPES = ("PretrainedConfig", "PreTrainedConfig")


def _sub_configs(config) -> dict:
    """The configs a composite config holds (text, vision, audio ...), by attribute."""
    return {key: value for key, value in vars(config).items()
            if any(base.__name__ in _SUBCONFIG_TYPES for base in type(value).__mro__)}


def _kept_layers(lists, layers: int) -> list[int]:
    """Which layers a shrunk hybrid keeps: the first of each kind (attention, state-space,
    ...) any per-layer list names, then the first ones, in order."""
    depth = TINY_SIZES["num_hidden_layers"]
    keep: list[int] = []
    for values in lists:
        for index, value in enumerate(values):
            if len(keep) < depth and index not in keep and repr(value) not in {
                    repr(values[i]) for i in keep}:
                keep.append(index)
    keep += [i for i in range(layers) if i not in keep][:depth - len(keep)]
    return sorted(keep)


def _shrink(config, sizes: dict) -> dict:
    """Constructor arguments that shrink ``config`` (and its sub-configs), its per-layer
    lists cut to the new depth."""
    layers = getattr(config, "num_hidden_layers", None)
    kwargs = {}
    for key, value in sizes.items():
        if hasattr(config, key) and not isinstance(getattr(config, key, None), (list, dict)):
            kwargs[key] = value
    lists = {key: value for key, value in vars(config).items()
             if isinstance(value, list) and layers and len(value) == layers}
    keep = _kept_layers(lists.values(), layers or 0)
    for key, value in lists.items():  # per-layer lists (layer_types, ...) shrink too
        kwargs[key] = [value[i] for i in keep]
    for key, sub in _sub_configs(config).items():
        kwargs[key] = {**sub.to_dict(), **_shrink(sub, {**TINY_SIZES, "vocab_size": 512})}
    return kwargs


def tiny_config(model_type: str, vocab_size: int):
    """A tiny config of any family: its defaults, shrunk, with the vocabulary given.

    Built through the config's constructor, so what it derives from the sizes (head
    dimensions, per-layer types) follows; a config that refuses that is shrunk in place."""
    config = AutoConfig.for_model(model_type)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    sizes = {**TINY_SIZES, **POSTPROCESSING, "vocab_size": vocab_size}
    try:
        if text is config:
            return AutoConfig.for_model(model_type, **_shrink(config, sizes))
        [name] = [key for key, value in vars(config).items() if value is text]
        kwargs = _shrink(config, TINY_SIZES)
        kwargs[name] = {**text.to_dict(), **_shrink(text, sizes)}
        return AutoConfig.for_model(model_type, **kwargs)
    except Exception:  # noqa: BLE001  (any refusal: shrink the defaults in place instead)
        return _tiny_config_in_place(model_type, vocab_size)


def _tiny_config_in_place(model_type: str, vocab_size: int):
    config = AutoConfig.for_model(model_type)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    for key, value in vars(text).copy().items():
        if isinstance(value, list) and layers and len(value) == layers:
            setattr(text, key, value[:TINY_SIZES["num_hidden_layers"]])
    for key, value in {**TINY_SIZES, **POSTPROCESSING, "vocab_size": vocab_size}.items():
        forced = key == "final_logit_softcapping" and model_type == "gemma3_text"
        if forced or hasattr(text, key):
            try:
                current = getattr(text, key, None)
                if not isinstance(current, (list, dict)):
                    setattr(text, key, value)
            except (AttributeError, TypeError, ValueError):
                continue  # a read-only property: the family derives it
    return config


def tiny_configs(model_type: str, vocab_size: int):
    """Tiny configs of a family to try in turn: shrunk through the constructor, the same with
    as many key-value heads as heads (multi-head latent attention needs it), shrunk in place.
    Each is built when asked for (a config that refuses raises then)."""
    yield lambda: tiny_config(model_type, vocab_size)

    def full_heads():
        config = AutoConfig.for_model(model_type)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        sizes = {**TINY_SIZES, **POSTPROCESSING, "vocab_size": vocab_size,
                 "num_key_value_heads": TINY_SIZES["num_attention_heads"]}
        if text is config:
            return AutoConfig.for_model(model_type, **_shrink(config, sizes))
        [name] = [key for key, value in vars(config).items() if value is text]
        return AutoConfig.for_model(model_type, **_shrink(config, TINY_SIZES),
                                    **{name: {**text.to_dict(), **_shrink(text, sizes)}})

    yield full_heads

    def core_sizes():  # the widths and depth only (a family that validates its experts)
        core = ("hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads",
                "n_head", "num_key_value_heads", "intermediate_size", "head_dim",
                "max_position_embeddings")
        config = AutoConfig.for_model(model_type)
        sizes = {key: TINY_SIZES[key] for key in core}
        if config.get_text_config() is not config:
            raise ValueError("a composite config")
        return AutoConfig.for_model(model_type, **_shrink(config, {**sizes,
                                                                   "vocab_size": vocab_size}))

    yield core_sizes
    yield lambda: _tiny_config_in_place(model_type, vocab_size)


# Tiny models larger than this (a vision or audio tower that does not shrink) are not built.
MAX_TINY_PARAMETERS = 20_000_000


def tiny_family_model(model_type: str, vocab_size: int, seed: int = 0):
    """A tiny random model of any family whose own forward pass runs, with perturbed norms
    and head; raises ValueError with the reason (the first config's) when none can be made."""
    reasons = []
    ids = torch.arange(1, 9).unsqueeze(0)
    for make in tiny_configs(model_type, vocab_size):
        try:
            config = make()
            text = config.get_text_config() if hasattr(config, "get_text_config") else config
            text.bos_token_id, text.eos_token_id = 1, 2
            with torch.device("meta"):
                size = sum(p.numel() for p in
                           AutoModelForCausalLM.from_config(config).parameters())
            if size > MAX_TINY_PARAMETERS:
                reasons.append(f"{size / 1e6:.0f}M parameters once shrunk (a part of it "
                               "does not shrink)")
                continue
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config).eval()
            with torch.no_grad():
                model(input_ids=ids, use_cache=False)
        except Exception as exc:  # noqa: BLE001  (any failure of the family's own code)
            reasons.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
                           if str(exc).strip() else type(exc).__name__)
            continue
        perturb(model, seed)
        return model
    raise ValueError(reasons[0])


def save_any_family(model_type: str, folder: Path, tokenizer: PreTrainedTokenizerFast,
                    seed: int = 0) -> Path:
    """save_pretrained a tiny random model of any family, with perturbed norms and head."""
    model = tiny_family_model(model_type, len(tokenizer), seed)
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    text.bos_token_id, text.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    try:
        model.save_pretrained(folder)
    except Exception as exc:  # noqa: BLE001  (transformers' own saving of this family)
        raise ValueError(f"save_pretrained fails ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0][:120]})") from exc
    tokenizer.save_pretrained(folder)
    return folder


# A ChatML-style template for tiny models (their tokenizers ship none).
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")


def save_chat_model(source: Path, folder: Path) -> Path:
    """A copy of the tiny model in ``source`` whose tokenizer has CHAT_TEMPLATE."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(source, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


# --- Hostile special tokens ------------------------------------------------------------------


def save_special_token_model(folder: Path, specials: list[str]) -> Path:
    """A tiny phi (its head has a bias) whose byte-level tokenizer has ``specials`` as special
    tokens, predicted in that order at every cell: the first is every cell's top-1, the next
    ones follow in its top-k (their head biases dwarf the logits)."""
    tokenizer = byte_level_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    save_tiny_model("phi", folder, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        bias = model.get_output_embeddings().bias
        for rank, token in enumerate(specials):
            bias[tokenizer.convert_tokens_to_ids(token)] = 1000.0 - 100.0 * rank
    model.save_pretrained(folder)
    return folder


# --- Sessions on a manifest's model, as the build opens them ---------------------------------


def open_session(manifest, spec=None):
    """A ModelSession on one of the manifest's models (the first by default)."""
    from lensreport.lens.engine import ModelSession
    from lensreport.manifest.checks import resolve_model

    spec = spec or manifest.models[0]
    return ModelSession.open(spec.request, resolve_model(manifest, spec))


def encode(session, prompt):
    return session.prepare(prompt.request)


def prompt_document(session, prompt, lens=None, top_k: int = 5):
    """The results document of one prompt through one lens (logit by default)."""
    from lensreport.lens.kinds import LogitLens

    encoded = encode(session, prompt)
    [(_, hidden, last)] = session.hidden_states([encoded.input_ids])
    return session.run(encoded, "key", hidden, last, lens or LogitLens(), top_k), encoded
