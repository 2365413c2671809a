"""The adapters an engine knows (name -> directory) and the few resident in LoRA slots, LRU-evicted.

Registration validates the adapter fully (reads it) on the caller's thread, so errors surface at
``/v1/load_lora_adapter`` time as they do in vLLM. Slots are filled by the scheduler thread between forward
passes (:meth:`AdapterSlots.acquire`); an adapter used by a running sequence is pinned and never evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from serving.engine.lora import AdapterFormatError, LoraWeights, MultiLoraLinear, load_lora_weights


class AdapterExistsError(ValueError):
    pass


class AdapterUnknownError(KeyError):
    pass


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    slot: int | None
    """The LoRA slot it occupies now, or None when not resident."""


class AdapterSlots:
    def __init__(
        self, wrappers: dict[str, MultiLoraLinear], *, max_loras: int, max_rank: int, dtype: torch.dtype
    ) -> None:
        if max_loras < 1:
            raise ValueError("max_loras must be >= 1")
        self._wrappers = wrappers
        self.max_loras = max_loras
        self.max_rank = max_rank
        self._dtype = dtype
        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}
        self._resident: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._pins: dict[str, int] = {}
        self._free = list(range(1, max_loras + 1))
        self._stale: set[str] = set()
        """Replaced in place while running: reloaded into a slot once its running sequences finish."""
        self.loads = 0
        self.evictions = 0

    # -- registration (any thread) -------------------------------------------------------------------
    def validate(self, path: Path) -> LoraWeights:
        weights = load_lora_weights(path, dtype=self._dtype)
        if weights.rank > self.max_rank:
            raise AdapterFormatError(
                f"LoRA rank {weights.rank} is greater than max_lora_rank {self.max_rank}; restart the engine "
                "with a larger --max-lora-rank"
            )
        unknown = sorted(set(weights.modules) - set(self._wrappers))
        if unknown:
            raise AdapterFormatError(
                f"Adapter targets modules the engine does not wrap: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else "")
            )
        return weights

    def register(self, name: str, path: str | Path) -> None:
        path = Path(path)
        with self._lock:
            if name in self._paths:
                raise AdapterExistsError(f"The lora adapter '{name}' has already been loaded.")
        self.validate(path)
        with self._lock:
            if name in self._paths:
                raise AdapterExistsError(f"The lora adapter '{name}' has already been loaded.")
            self._paths[name] = path

    def replace(self, name: str, path: str | Path) -> None:
        """vLLM's ``load_inplace``: ``name`` now reads ``path`` (registered if it was not). An idle resident
        copy is dropped at once; one that sequences are running on is reloaded as soon as they finish
        (requests joining them meanwhile share the old weights)."""
        path = Path(path)
        self.validate(path)
        with self._lock:
            self._paths[name] = path
            if name in self._resident:
                if self._pins.get(name):
                    self._stale.add(name)
                else:
                    self._free.append(self._resident.pop(name))

    def unregister(self, name: str) -> None:
        """Forget ``name``; sequences already running on it finish with its weights."""
        with self._lock:
            if name not in self._paths:
                raise AdapterUnknownError(f"The lora adapter '{name}' cannot be found.")
            del self._paths[name]
            if name in self._resident and not self._pins.get(name):
                self._free.append(self._resident.pop(name))

    def is_registered(self, name: str) -> bool:
        with self._lock:
            return name in self._paths

    def infos(self) -> list[AdapterInfo]:
        with self._lock:
            return [AdapterInfo(n, p, self._resident.get(n)) for n, p in self._paths.items()]

    # -- slots (scheduler thread) ----------------------------------------------------------------------
    def acquire(self, name: str) -> int | None:
        """Pin ``name`` in a slot, loading it (and evicting the least recently used idle adapter) if needed.

        Returns the slot, or None when every slot is pinned by running sequences (the caller waits).
        Raises :class:`AdapterUnknownError` when the adapter was unloaded meanwhile.
        """
        with self._lock:
            if name not in self._paths:
                raise AdapterUnknownError(f"The lora adapter '{name}' cannot be found.")
            slot = self._resident.get(name)
            if slot is not None and name in self._stale and not self._pins.get(name):
                self._stale.discard(name)
                self._free.append(self._resident.pop(name))
                slot = None
            if slot is not None:
                self._resident.move_to_end(name)
                self._pins[name] = self._pins.get(name, 0) + 1
                return slot
            if not self._free:
                victim = next((n for n in self._resident if not self._pins.get(n)), None)
                if victim is None:
                    return None
                self._free.append(self._resident.pop(victim))
                self.evictions += 1
            slot = self._free.pop()
            path = self._paths[name]
        try:
            weights = self.validate(path)
        except Exception:
            with self._lock:
                self._free.append(slot)
            raise
        for module_path, wrapper in self._wrappers.items():
            factors = weights.modules.get(module_path)
            if factors is None:
                wrapper.write_slot(slot, None, None, 0.0)
            else:
                wrapper.write_slot(slot, factors[0], factors[1], factors[2])
        with self._lock:
            self._resident[name] = slot
            self._pins[name] = self._pins.get(name, 0) + 1
            self.loads += 1
        return slot

    def release(self, name: str) -> None:
        with self._lock:
            left = self._pins.get(name, 0) - 1
            if left > 0:
                self._pins[name] = left
                return
            self._pins.pop(name, None)
            if name in self._stale and name in self._resident:
                self._stale.discard(name)
                self._free.append(self._resident.pop(name))
            elif name not in self._paths and name in self._resident:
                # Unloaded while it was running: free the slot now.
                self._free.append(self._resident.pop(name))

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._resident)
