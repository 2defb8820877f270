"""Known-answer checks of the statistics on hand-made distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lensreport.models.heads import LensHead
from lensreport.lens.tiled import lens_statistics as run_lens


def identity_head(vocab: int) -> LensHead:
    """Unembedding = identity, so the inputs *are* the logits."""
    linear = nn.Linear(vocab, vocab, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(vocab))
    return LensHead(norm_paths=(), norms=[], unembedding_path="eye", unembedding=linear)


def test_uniform_entropy_and_kl():
    vocab = 8
    uniform = torch.zeros(1, vocab)
    peaked = torch.tensor([[math.log(0.5)] + [math.log(0.5 / 7)] * 7])
    inputs = torch.stack([uniform, peaked])  # (layers=2, T=1, d)
    stats = run_lens(inputs, identity_head(vocab), torch.tensor([0]), top_k=3)
    assert stats.entropy[0, 0] == pytest.approx(math.log(8), abs=1e-6)
    expected_entropy = -(0.5 * math.log(0.5) + 7 * (0.5 / 7) * math.log(0.5 / 7))
    assert stats.entropy[1, 0] == pytest.approx(expected_entropy, abs=1e-6)
    # KL(final || uniform) = log V - H(final)
    assert stats.kl_to_final[0, 0] == pytest.approx(math.log(8) - expected_entropy, abs=1e-6)
    assert stats.kl_to_final[1, 0] == 0.0
    assert stats.topk_ids[1, 0, 0] == 0
    assert stats.topk_probs[1, 0, 0] == pytest.approx(0.5, abs=1e-6)


def test_ranks_are_one_based_and_ties_share_the_better_rank():
    logits = torch.tensor([[3.0, 1.0, 1.0, 0.0, 2.0]])
    inputs = torch.stack([logits, logits, logits])  # T = 1 here; next tokens need T >= 2
    inputs = torch.cat([inputs, inputs], dim=1)  # T = 2
    for next_id, rank in [(0, 1), (4, 2), (1, 3), (2, 3), (3, 5)]:
        stats = run_lens(inputs, identity_head(5), torch.tensor([0, next_id]), top_k=2,
                         target_id=next_id)
        assert stats.next_token_rank[0, 0] == rank
        assert stats.target_rank[0, 1] == rank
        assert stats.next_token_rank[0, 1] == 0  # no next token after the last position
        assert math.isnan(stats.next_token_prob[0, 1])


def test_chunking_does_not_change_results():
    torch.manual_seed(0)
    inputs = torch.randn(4, 7, 50) * 3
    head = identity_head(50)
    ids = torch.randint(0, 50, (7,))
    whole = run_lens(inputs, head, ids, top_k=5, target_id=3)
    parts = run_lens(inputs, head, ids, top_k=5, target_id=3, chunk=2)
    for name in ("entropy", "kl_to_final", "topk_probs", "next_token_prob", "target_prob"):
        assert getattr(whole, name) == pytest.approx(getattr(parts, name), nan_ok=True)
    # Vocabulary blocks change the order of float32 sums, nothing else.
    blocks = run_lens(inputs, head, ids, top_k=5, target_id=3, chunk=3, block=7)
    for name in ("entropy", "kl_to_final", "topk_probs", "next_token_prob", "target_prob"):
        assert getattr(whole, name) == pytest.approx(getattr(blocks, name), rel=1e-5,
                                                     nan_ok=True)
    for name in ("topk_ids", "next_token_rank", "target_rank"):
        assert (getattr(whole, name) == getattr(blocks, name)).all()


def test_float32_statistics_match_float64():
    torch.manual_seed(1)
    vocab = 5000
    inputs = torch.randn(3, 4, vocab) * 8
    stats = run_lens(inputs, identity_head(vocab), torch.arange(4), top_k=3)
    logp = torch.log_softmax(inputs.double(), -1)
    entropy = -(logp.exp() * logp).sum(-1)
    kl = (logp[-1].exp() * (logp[-1] - logp)).sum(-1)
    assert torch.from_numpy(stats.entropy).double() == pytest.approx(entropy, abs=1e-4)
    assert torch.from_numpy(stats.kl_to_final).double() == pytest.approx(kl, abs=1e-4)


def test_non_finite_logits_name_the_layer():
    """fp16 overflow or broken weights: a clear error naming the layer, never NaN in JSON."""
    import pytest
    import torch

    from lensreport.errors import LensReportError
    from lensreport.models.heads import LensHead
    from lensreport.lens.tiled import lens_statistics as run_lens

    torch.manual_seed(0)
    head = LensHead((), [], "lm_head", torch.nn.Linear(8, 20, bias=False))
    inputs = torch.randn(4, 5, 8)
    inputs[2, 3] = float("inf")
    with pytest.raises(LensReportError, match=r"^layer 2: the logits are not finite"):
        run_lens(inputs, head, torch.arange(5), 3)
    inputs[2, 3] = float("nan")
    with pytest.raises(LensReportError, match=r"^layer 2:"):
        run_lens(inputs, head, torch.arange(5), 3)
