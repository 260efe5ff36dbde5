"""A mixin for dataclasses of tensors."""
from __future__ import annotations

import dataclasses
from typing import Union

import torch
from torch import Tensor


class TensorDataclass:
    """Adds ``to(device)`` to a dataclass: a copy with every tensor field moved."""

    def to(self, device: Union[str, torch.device]):
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), Tensor)}
        return dataclasses.replace(self, **moved)
