"""Per-relation settings resolved against a DATA's relations, and their parameters.

Every relation has its own operator, negative sides, all-negatives switch and
loss weight (``[relations.NAME]`` in the config, else the global defaults). With
``model.reciprocal`` relation ``r + R`` is the learnt inverse of relation ``r``.
All relations' parameters live in one flat float32 vector, each relation owning
a slice (a view is reshaped to the operator's parameter shape), so any mix of
operators is stored as one checkpoint shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bigembed.config import Config
from bigembed.errors import ConfigError
from bigembed.trainer.model import Operator, make_operator, param_size


@dataclass(frozen=True)
class RelationSpec:
    name: str
    operator_name: str
    operator: Operator
    sides: str  # "both", "lhs" or "rhs": which side of an edge is corrupted
    all_negatives: bool
    weight: float
    offset: int  # start of this relation's slice of the flat parameter vector
    shape: tuple[int, ...] | None
    lhs_type: int = 0  # entity type indices of the two sides
    rhs_type: int = 0
    inverse: bool = False  # the learnt inverse of a relation (``model.reciprocal``)


def relation_specs(config: Config, names: list[str], types: list[tuple[int, int]] | None = None,
                   type_names: list[str] | None = None) -> list[RelationSpec]:
    """Specs of ``names`` (then of their inverses when ``model.reciprocal``, whose sides
    swap types). ``types[r]``: (lhs, rhs) entity type indices of relation ``r`` (default
    all 0), named by ``type_names``; a config whose schema disagrees is refused."""
    unknown = sorted(set(config.relations) - set(names))
    if unknown:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ConfigError(f"relations.{unknown[0]}: no relation named {unknown[0]!r} in the DATA (it has: {shown})")
    types = types or [(0, 0)] * len(names)
    type_names = type_names or ["node"]
    for name, pair in zip(names, types, strict=True):
        rc = config.relation(name)
        for side, declared, got in (("lhs", rc.lhs, pair[0]), ("rhs", rc.rhs, pair[1])):
            if declared is not None and declared != type_names[got]:
                raise ConfigError(
                    f"relations.{name}.{side}: {declared!r} in the config, but the DATA's {name} has "
                    f"{side} type {type_names[got]!r} (import again with this config)"
                )
    dim = config.model.dim
    reciprocal = config.model.reciprocal
    specs: list[RelationSpec] = []
    offset = 0
    for inverse in (False, True) if reciprocal else (False,):
        for name, (lt, rt) in zip(names, types, strict=True):
            rc = config.relation(name)
            op_name = rc.operator or config.model.operator
            operator = make_operator(op_name, f"relations.{name}.operator")
            shape = operator.param_shape(dim)
            sides = "rhs" if reciprocal else (rc.negative_sides or config.training.negative_sides)
            all_negs = config.training.all_negatives if rc.all_negatives is None else rc.all_negatives
            specs.append(RelationSpec(f"{name} (inverse)" if inverse else name, op_name, operator, sides,
                                      all_negs, rc.weight, offset, shape, *((rt, lt) if inverse else (lt, rt)),
                                      inverse))
            offset += param_size(shape)
    return specs


def one_type_pair(specs: list[RelationSpec]) -> bool:
    """Whether every relation links the same (lhs type, rhs type), so a batch may mix them."""
    return len({(s.lhs_type, s.rhs_type) for s in specs if not s.inverse}) <= 1


def initial_params(specs: list[RelationSpec], dim: int, random_scale: float = 0.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """The flat parameter vector: every relation at its operator's identity, or, with
    ``random_scale`` > 0, every parameter drawn from N(0, random_scale^2)."""
    total = sum(param_size(s.shape) for s in specs)
    if random_scale > 0:
        return torch.randn(total, generator=generator).mul_(random_scale)
    flat = torch.zeros(total)
    for s in specs:
        init = s.operator.init_param(dim)
        if init is not None:
            flat[s.offset : s.offset + init.numel()] = init.reshape(-1)
    return flat


@dataclass
class RelationState:
    """Flat parameters and their element-wise Adagrad accumulator (both (total,) float32), and
    with ``model.global_emb`` the (entity types, dim) global vectors and their accumulator."""

    specs: list[RelationSpec]
    params: Tensor
    adagrad: Tensor
    globals: Tensor | None = None
    globals_adagrad: Tensor | None = None

    def global_leaf(self) -> Tensor | None:
        """A copy of the global vectors to differentiate a batch's loss by, or None."""
        return None if self.globals is None else self.globals.clone().requires_grad_()

    def param(self, relation: int) -> Tensor | None:
        return self._view(self.params, relation)

    def adagrad_of(self, relation: int) -> Tensor | None:
        return self._view(self.adagrad, relation)

    def stacked(self, flat: Tensor | None = None) -> Tensor | None:
        """All relations' parameters (or ``flat``'s) as one (num_relations, ...) view; all must
        share one parameter shape."""
        shape = self.specs[0].shape if self.specs else None
        if shape is None:
            return None
        return (self.params if flat is None else flat).view(len(self.specs), *shape)

    def _view(self, flat: Tensor, relation: int) -> Tensor | None:
        s = self.specs[relation]
        if s.shape is None:
            return None
        return flat[s.offset : s.offset + param_size(s.shape)].view(s.shape)
