"""A left-padded batch of KV caches that sequences can join and leave between decode steps.

This is the padded-batch form of continuous batching (TGI's original ``CausalLMBatch``): all rows share
one cache length; a row's padding is masked out by the attention mask and its positions are counted from
its own first real token. Joining pads the shorter batch on the left and concatenates rows; leaving
selects rows and then drops columns that became padding for every remaining row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812


def _layers(cache: Any) -> list[Any]:
    return list(cache.layers)


def check_supported(cache: Any) -> None:
    """Refuse caches this module cannot pad and concatenate (sliding windows, static or quantized)."""
    for layer in _layers(cache):
        if getattr(layer, "is_sliding", False) or type(layer).__name__ != "DynamicLayer":
            raise NotImplementedError(
                f"The embedded CPU engine needs full-attention dynamic KV caches; this model uses "
                f"{type(layer).__name__}. Serve it with vLLM instead."
            )


class PaddedBatch:
    """KV cache + attention mask of the running rows; row i belongs to ``owners[i]``."""

    def __init__(self, cache: Any, mask: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask  # (rows, length), 1 = real token

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (in that order), then trim columns that are padding everywhere."""
        if keep == list(range(self.rows)):
            return
        index = torch.tensor(keep, dtype=torch.long)
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.mask = self.mask.index_select(0, index)
        self._trim_left()

    def _trim_left(self) -> None:
        if self.rows == 0:
            return
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else self.length
        if start == 0:
            return
        for layer in _layers(self.cache):
            layer.keys = layer.keys[:, :, start:, :]
            layer.values = layer.values[:, :, start:, :]
        self.mask = self.mask[:, start:]

    def extend(self, other: PaddedBatch) -> None:
        """Append ``other``'s rows after ours, left-padding whichever is shorter."""
        length = max(self.length, other.length)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, length), _pad_left(theirs.keys, length)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, length), _pad_left(theirs.values, length)], dim=0)
        self.mask = torch.cat([_pad_mask(self.mask, length), _pad_mask(other.mask, length)], dim=0)

    def append_step(self) -> torch.Tensor:
        """Extend the mask by one real column for the token about to be decoded; returns the new mask."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)
        return self.mask


def _pad_left(states: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - states.shape[-2]
    return F.pad(states, (0, 0, missing, 0)) if missing else states


def _pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - mask.shape[1]
    return F.pad(mask, (missing, 0)) if missing else mask
