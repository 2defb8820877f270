"""Readable token strings: what the token is, never two ids that look the same."""

from __future__ import annotations

from lensreport.models.tokens import _make_visible, display_vocab, tokenizer_kind


def test_byte_level_tokens(tokenizers):
    tok = tokenizers["byte_level"]
    assert tokenizer_kind(tok) == "byte_level"
    vocab = display_vocab(tok, len(tok) + 3)
    ids = tok.encode(" the\n\tü", add_special_tokens=False)
    shown = [vocab[i] for i in ids]
    assert shown[0] == " the"
    assert "↵" in "".join(shown) and "⇥" in "".join(shown)
    assert not any("Ġ" in s or "Ċ" in s for s in vocab)
    assert vocab[-1] == f"⟨unused id {len(tok) + 2}⟩"  # head rows beyond the tokenizer
    assert len(set(vocab)) == len(vocab)


def test_sentencepiece_tokens(tokenizers):
    tok = tokenizers["sentencepiece"]
    assert tokenizer_kind(tok) == "sentencepiece"
    vocab = display_vocab(tok, len(tok))
    spaced = tok.convert_tokens_to_ids("▁the")
    assert vocab[spaced] == " the"
    assert vocab[tok.convert_tokens_to_ids("<0x0A>")] == "↵"
    assert vocab[tok.convert_tokens_to_ids("<0xC3>")] == "\\xc3"
    assert vocab[tok.bos_token_id] == "<bos>"
    assert not any("▁" in s for s in vocab)
    assert len(set(vocab)) == len(vocab)


def test_leading_space_never_collides(tokenizers):
    """'▁true' and 'true' decode to the same text with tokenizer.decode; not here."""
    tok = tokenizers["sentencepiece"]
    vocab = display_vocab(tok, len(tok))
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    pairs = [(i, pieces.index(p[1:])) for i, p in enumerate(pieces)
             if p.startswith("▁") and len(p) > 1 and p[1:] in pieces]
    assert pairs, "the test tokenizer must contain a '▁x' / 'x' pair"
    for spaced, plain in pairs:
        assert vocab[spaced] != vocab[plain]
        assert vocab[spaced].split("⟨#")[0] == " " + vocab[plain].split("⟨#")[0]


def test_invisible_characters_are_shown():
    assert _make_visible(" ") == "␣"
    assert _make_visible("   ") == "␣␣␣"
    assert _make_visible("") == "∅"
    assert _make_visible("a\u200fb") == "a⟨U+200F⟩b"
    assert _make_visible("x\r\n") == "x␍↵"
    assert _make_visible(" dog") == " dog"
