"""The continuous engine's per-sequence attention (agentclone.policies.varlen_attention) against
attention written out by hand, sequence by sequence, and inside the engine against transformers' own."""

import math

import pytest
import torch

from agentclone.policies.varlen_attention import attend


def _by_hand(query, key, value, cu_q, cu_k, scaling):
    """Softmax attention of each sequence's queries to its own keys, the query block at the end of its
    context, key heads repeated for grouped queries: [1, total_q, H, D]."""
    heads, kv_heads = query.shape[1], key.shape[1]
    rows = []
    for i in range(len(cu_q) - 1):
        for j in range(cu_q[i], cu_q[i + 1]):
            seen = cu_k[i + 1] - cu_k[i] - (cu_q[i + 1] - j) + 1  # keys up to this query's own position
            per_head = []
            for h in range(heads):
                kh = h // (heads // kv_heads)
                k = key[0, kh, cu_k[i] : cu_k[i] + seen]
                v = value[0, kh, cu_k[i] : cu_k[i] + seen]
                weights = torch.softmax(k @ query[0, h, j] * scaling, dim=0)
                per_head.append(weights @ v)
            rows.append(torch.stack(per_head))
    return torch.stack(rows).unsqueeze(0)


@pytest.mark.parametrize(
    "q_lens, k_lens",
    [
        ([1, 1, 1], [5, 17, 9]),  # a decode batch: contexts of different lengths, padded into one call
        ([1], [12]),  # one sequence decoding
        ([7, 4], [7, 4]),  # prefill without a cache
        ([3, 1, 6], [10, 8, 6]),  # a chunk after cached tokens, a decode and a fresh prefill in one batch
    ],
)
def test_each_sequence_attends_to_its_own_context_only(q_lens, k_lens):
    torch.manual_seed(0)
    heads, kv_heads, dim = 6, 2, 8
    cu_q = [0] + list(torch.tensor(q_lens).cumsum(0).tolist())
    cu_k = [0] + list(torch.tensor(k_lens).cumsum(0).tolist())
    query = torch.randn(1, heads, cu_q[-1], dim)
    key = torch.randn(1, kv_heads, cu_k[-1], dim)
    value = torch.randn(1, kv_heads, cu_k[-1], dim)
    scaling = 1 / math.sqrt(dim)
    got = attend(query, key, value, cu_q, cu_k, scaling)
    assert got.shape == (1, cu_q[-1], heads, dim)
    torch.testing.assert_close(got, _by_hand(query, key, value, cu_q, cu_k, scaling), rtol=1e-5, atol=1e-5)
    # another sequence's keys change nothing: scramble every key but the first sequence's
    key2 = key.clone()
    key2[:, :, cu_k[1] :] = torch.randn_like(key2[:, :, cu_k[1] :])
    again = attend(query, key2, value, cu_q, cu_k, scaling)
    torch.testing.assert_close(again[:, : cu_q[1]], got[:, : cu_q[1]])


def test_unknown_attention_is_a_clear_error():
    from agentclone.policies.hf import HFPolicy

    with pytest.raises(ValueError, match=r"unknown hf attention 'flash'.*allowed: varlen, sdpa"):
        HFPolicy(engine="continuous", attention="flash")  # before any model is loaded


def test_the_last_engine_to_finish_gives_the_model_its_attention_back():
    """Two engines on one model (say, two policies sharing it): the first to close must not switch
    the attention back under the other, which is still running."""
    from types import SimpleNamespace

    from agentclone.policies import varlen_attention

    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))
    varlen_attention.switch(model)
    varlen_attention.switch(model)
    assert model.config._attn_implementation == varlen_attention.NAME
    varlen_attention.restore(model)
    assert model.config._attn_implementation == varlen_attention.NAME  # the second engine still runs
    varlen_attention.restore(model)
    assert model.config._attn_implementation == "sdpa"
