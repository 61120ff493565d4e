"""Per-identity student feature bank: the extra positive pairs of ICD-Face's SDC term.

ICD-Face (Yu et al., ICCV 2023), section 1 of DESIGN.md: each identity owns K slots, each holding
(dataset row n, flip f, detached student embedding, step written). A slot older than `max_age`
steps is invalid. The training loop gathers before its loss and updates after it, so an anchor
never meets the copy of itself written in the same step; rows equal to the anchor's are excluded
too, so an older copy of the same image (either flip) never forms a pair with it.
"""
from __future__ import annotations

from typing import Any

import torch

from common.errors import ConfigError
from config.choices import BANK_DTYPES, BANK_PLACES, check_choice
from models.device import to_device

_EMPTY = -1


# `icd.bank_dtype` -> the torch dtype of the stored embeddings
STORAGE_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in BANK_DTYPES}


class FeatureBank:
    """Ring buffer of K slots per identity, kept as dense tensors on one device.

    Buffers: `rows` [C, K] int64 (-1: empty), `flips` [C, K] int8, `emb` [C, K, D] (float32, float16
    or bfloat16: the stored embeddings are rounded to it, and `gather` returns them as float32),
    `steps` [C, K] int64 (step written, -1: never), `pointer` [C] int64 (next slot).
    Placement: the slot table (`rows`, `flips`, `steps`, `pointer`) always lives on the host, so a step
    finds its valid slots and their dataset rows (for the teacher lookup) without waiting for the
    device; `emb` lives on `device`, or in host memory when `place = "host"` (a step's gathered slots
    then go to `device` through pinned memory, asynchronously). `update` and `gather` take the
    batch's labels, rows and flips as host tensors (the batch as loaded; device tensors are copied
    back, which waits for the device); `gather` returns the embeddings on `device`, the rest on the host.
    """

    def __init__(
        self,
        num_classes: int,
        slots: int,
        dim: int,
        max_age: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        place: str = "device",
    ) -> None:
        if num_classes < 1:
            raise ConfigError(f"feature bank: num_classes must be >= 1, got {num_classes}")
        if slots < 1:
            raise ConfigError(f"icd.bank_size must be >= 1, got {slots}")
        if dim < 1:
            raise ConfigError(f"feature bank: dim must be >= 1, got {dim}")
        if max_age < 0:
            raise ConfigError(f"icd.max_age must be >= 0, got {max_age}")
        if dtype not in STORAGE_DTYPES.values():
            raise ConfigError(f"feature bank: dtype must be one of {', '.join(BANK_DTYPES)}, got {dtype}")
        check_choice(place, BANK_PLACES, "icd.bank_place")
        self.num_classes = int(num_classes)
        self.slots = int(slots)
        self.dim = int(dim)
        self.max_age = int(max_age)
        self.out_device = torch.device(device)
        self.device = torch.device("cpu") if place == "host" else self.out_device  # where `emb` lives
        self.pinned = place == "host" and self.out_device.type == "cuda"
        self.dtype = dtype
        self.rows = torch.full((num_classes, slots), _EMPTY, dtype=torch.int64)
        self.flips = torch.zeros((num_classes, slots), dtype=torch.int8)
        self.emb = torch.zeros((num_classes, slots, dim), dtype=dtype, device=self.device)
        self.steps = torch.full((num_classes, slots), _EMPTY, dtype=torch.int64)
        self.pointer = torch.zeros(num_classes, dtype=torch.int64)

    def _buffers(self) -> dict[str, torch.Tensor]:
        return {"rows": self.rows, "flips": self.flips, "emb": self.emb, "steps": self.steps,
                "pointer": self.pointer}

    def memory_bytes(self) -> int:
        """Bytes held by the bank's tensors."""
        return sum(t.numel() * t.element_size() for t in self._buffers().values())

    @torch.no_grad()
    def update(
        self,
        labels: torch.Tensor,
        rows: torch.Tensor,
        flips: torch.Tensor,
        emb: torch.Tensor,
        step: int,
    ) -> None:
        """Write a batch into its identities' rings, in batch order: `update_table`, then `store`.

        labels, rows, flips: [B] integer host tensors; emb: [B, D] (normalised by the caller; stored
        detached). Images of one identity take consecutive slots from its pointer, wrapping; when an
        identity appears more than K times in the batch, only its last K images remain.
        """
        if emb.shape != (labels.numel(), self.dim):
            raise ValueError(f"feature bank update: labels [{labels.numel()}] and emb {tuple(emb.shape)} must agree "
                             f"with [B] and [B, {self.dim}]")
        self.store(*self.update_table(labels, rows, flips, step), emb)

    def update_table(self, labels: torch.Tensor, rows: torch.Tensor, flips: torch.Tensor,
                     step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The slot-table half of `update` (host work): returns the (identity, slot, batch position) written."""
        labels = labels.to("cpu", torch.int64).reshape(-1)
        batch = labels.numel()
        rows = rows.to("cpu", torch.int64).reshape(-1)
        flips = flips.to("cpu", torch.int8).reshape(-1)
        if rows.numel() != batch or flips.numel() != batch:
            raise ValueError(f"feature bank update: labels [{batch}], rows [{rows.numel()}] and flips "
                             f"[{flips.numel()}] must agree")
        if batch == 0:
            none = torch.zeros(0, dtype=torch.int64)
            return none, none, none
        sorted_labels, order = torch.sort(labels, stable=True)
        uniq, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(batch) - torch.repeat_interleave(starts, counts, output_size=batch)
        count_each = torch.repeat_interleave(counts, counts, output_size=batch)
        keep = rank >= count_each - self.slots
        cls = sorted_labels[keep]
        slot = (self.pointer[cls] + rank[keep]) % self.slots
        src = order[keep]
        self.rows[cls, slot] = rows[src]
        self.flips[cls, slot] = flips[src]
        self.steps[cls, slot] = int(step)
        self.pointer[uniq] = (self.pointer[uniq] + counts) % self.slots
        return cls, slot, src

    @torch.no_grad()
    def store(self, cls: torch.Tensor, slot: torch.Tensor, src: torch.Tensor, emb: torch.Tensor) -> None:
        """The embedding half of `update` (device work when the bank is on a GPU): emb[src] into (cls, slot)."""
        if not len(src):
            return
        emb = emb.detach()
        self.emb[to_device(cls, self.device), to_device(slot, self.device)] = \
            emb[to_device(src, emb.device)].to(self.device, self.dtype)

    def slot_table(self, labels: torch.Tensor, rows: torch.Tensor,
                   step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The slot table of each anchor's identity, on the host: rows [B, K] int64, flips [B, K] int64, valid [B, K].

        labels, rows: [B] integer host tensors (the anchors); valid = slot filled, written at most
        `max_age` steps before `step`, and holding a row other than the anchor's own.
        """
        labels = labels.to("cpu", torch.int64).reshape(-1)
        anchor_rows = rows.to("cpu", torch.int64).reshape(-1)
        slot_rows = self.rows[labels]
        age = int(step) - self.steps[labels]
        valid = (slot_rows >= 0) & (age <= self.max_age) & (slot_rows != anchor_rows[:, None])
        return slot_rows, self.flips[labels].long(), valid

    @torch.no_grad()
    def embeddings(self, labels: torch.Tensor) -> torch.Tensor:
        """The stored embeddings of each anchor's identity, [B, K, D] float32 on `device` (converted there)."""
        emb = self.emb[to_device(labels.reshape(-1), self.device, torch.int64)]
        if self.device != self.out_device:
            emb = emb.pin_memory().to(self.out_device, non_blocking=True) if self.pinned else emb.to(self.out_device)
        return emb.float()

    @torch.no_grad()
    def gather(
        self, labels: torch.Tensor, rows: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bank entries of each anchor's identity: `embeddings` on the device, then `slot_table` on the host.

        labels, rows: [B] integer host tensors (the anchors). Returns emb [B, K, D] float32, rows [B, K]
        int64, flips [B, K] int64 and valid [B, K] bool.
        """
        return (self.embeddings(labels), *self.slot_table(labels, rows, step))

    def state_dict(self) -> dict[str, Any]:
        """Buffers (CPU copies) and the shape they were built with."""
        state: dict[str, Any] = {k: v.detach().cpu().clone() for k, v in self._buffers().items()}
        state.update(num_classes=self.num_classes, slots=self.slots, dim=self.dim, max_age=self.max_age)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore buffers saved by `state_dict`; the shape must match, `max_age` stays as configured."""
        for key, name in (("num_classes", "number of identities"), ("slots", "icd.bank_size"),
                          ("dim", "embedding dimension")):
            if int(state.get(key, -1)) != getattr(self, key):
                raise ConfigError(
                    f"feature bank state: {name} is {state.get(key)} in the checkpoint but "
                    f"{getattr(self, key)} now")
        for key, current in self._buffers().items():
            saved = state[key]
            if tuple(saved.shape) != tuple(current.shape):
                raise ConfigError(f"feature bank state: '{key}' has shape {tuple(saved.shape)}, "
                                  f"expected {tuple(current.shape)}")
            current.copy_(saved.to(current.device, current.dtype))
