"""Attention per sequence for transformers' continuous batching (the ``hf`` policy's ``continuous`` engine).

transformers' continuous batching packs every running request into one flattened batch. With its
``sdpa`` attention, each layer reads the keys and values of *all* requests back from the paged cache
and runs one attention over them under a block-diagonal mask: at C concurrent requests every query
token scores every request's context, C times the work it needs, so attention grows with C squared.
On a 2-core CPU at 16 episodes that was about a third of the engine's time (py-spy, docs/benchmarks.md).

This module registers an attention function that uses the same paged cache and the sequence bounds
the engine already passes to flash attention (``cu_seq_lens_q`` / ``cu_seq_lens_k``) and attends
each sequence to its own context only:

- a decode batch (every sequence brings one new token): the contexts are gathered into one padded
  batch and attended in one ``scaled_dot_product_attention`` call, the padding masked out;
- otherwise (prefill chunks, mixed batches): one call per sequence, causal with the query block
  aligned to the end of its context.

The name contains "flash" because that is how the engine recognises an attention that takes
sequence bounds instead of a mask; nothing here needs the flash-attn package. Outside the engine
(no paged cache given) the model masks and attends as with transformers' ``sdpa``, so ``generate`` on
the same model, while the engine runs, answers as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "agentclone_flash_varlen"


def attend(query, key, value, cu_q: list[int], cu_k: list[int], scaling: float | None) -> torch.Tensor:
    """Attention of each sequence's queries to its own keys.

    ``query``: [1, H, total_q, D]; ``key``/``value``: [1, H_kv, total_k, D], sequence i's queries at
    ``cu_q[i]:cu_q[i+1]`` and its whole context (cached, then new) at ``cu_k[i]:cu_k[i+1]``; a query
    block sits at the end of its context (causal, aligned bottom-right). Returns [1, total_q, H, D]."""
    n = len(cu_q) - 1
    heads, dim = query.shape[1], query.shape[3]
    kv_heads = key.shape[1]
    gqa = heads != kv_heads
    q_lens = [cu_q[i + 1] - cu_q[i] for i in range(n)]
    k_lens = [cu_k[i + 1] - cu_k[i] for i in range(n)]
    if n > 1 and max(q_lens) == 1:
        # Decode: every context padded to the longest, one call; the padding is masked out.
        longest = max(k_lens)
        positions = torch.arange(longest, device=key.device).unsqueeze(0)
        lengths = torch.tensor(k_lens, device=key.device).unsqueeze(1)
        valid = positions < lengths  # [n, longest]
        starts = torch.tensor(cu_k[:-1], device=key.device).unsqueeze(1)
        index = torch.where(valid, starts + positions, torch.zeros_like(positions)).reshape(-1)
        k = key[0].index_select(1, index).view(kv_heads, n, longest, dim).transpose(0, 1)
        v = value[0].index_select(1, index).view(kv_heads, n, longest, dim).transpose(0, 1)
        q = query[0].transpose(0, 1).unsqueeze(2)  # [n, H, 1, D]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid.view(n, 1, 1, longest), scale=scaling, enable_gqa=gqa
        )
        return out.squeeze(2).unsqueeze(0)  # [1, n, H, D]
    outs = []
    for i in range(n):
        q = query[:, :, cu_q[i] : cu_q[i + 1]]
        k = key[:, :, cu_k[i] : cu_k[i + 1]]
        v = value[:, :, cu_k[i] : cu_k[i + 1]]
        ql, kl = q_lens[i], k_lens[i]
        if ql == 0:
            continue
        if ql == 1:  # one query at the end of its context sees all of it
            o = F.scaled_dot_product_attention(q, k, v, scale=scaling, enable_gqa=gqa)
        elif ql == kl:  # no cached context: top-left and bottom-right alignment agree
            o = F.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=True, enable_gqa=gqa)
        else:
            rows = torch.arange(ql, device=key.device).unsqueeze(1) + (kl - ql)
            mask = torch.arange(kl, device=key.device).unsqueeze(0) <= rows
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=gqa)
        outs.append(o)
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return out.transpose(1, 2).contiguous()


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, is_causal=None, cache=None, **kwargs):
    """transformers' attention-function signature, for ``AttentionInterface``."""
    from transformers.generation.continuous_batching import PagedAttentionCache

    if not isinstance(cache, PagedAttentionCache) or "cu_seq_lens_q" not in kwargs:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    key, value = cache.update(key_states=key, value_states=value, layer_idx=module.layer_idx, kwargs=kwargs)
    cu_q = kwargs["cu_seq_lens_q"].tolist()
    cu_k = kwargs["cu_seq_lens_k"].tolist()
    return attend(query, key, value, cu_q, cu_k, scaling), None


def switch(model) -> None:
    """Make ``model`` (a transformers model) attend with ``varlen_attention_forward`` until every engine
    that switched it has called ``restore``."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    # Outside the engine the model must mask as sdpa does (padding, causality): the engine ignores it
    AttentionMaskInterface.register(NAME, sdpa_mask)
    users = getattr(model, _USERS, 0)
    if users == 0:
        model.__dict__[_PREVIOUS] = model.config._attn_implementation
        model.config._attn_implementation = NAME
    model.__dict__[_USERS] = users + 1


def restore(model) -> None:
    """One engine is done with ``model``: the last one gives it back the attention it had before the first."""
    users = getattr(model, _USERS, 0)
    if users > 1:
        model.__dict__[_USERS] = users - 1
        return
    model.__dict__[_USERS] = 0
    if model.config._attn_implementation == NAME:
        model.config._attn_implementation = model.__dict__[_PREVIOUS]


# on the model: how many running engines use this attention, and what it had before the first
_USERS = "_agentclone_varlen_users"
_PREVIOUS = "_agentclone_varlen_previous"
