"""Where and how wide `apply` runs on Ray Data: one object from the CLI, or
from `apply_pipeline(..., ray=RayOptions(...))`, to the runner. Light to
import (no Ray, no torch): the CLI reads its help texts at start-up."""
from dataclasses import dataclass, field, fields
from typing import Optional


@dataclass(frozen=True)
class RayOptions:
    """The cluster and the actor pool. Every field's `help` is what the CLI
    says of its option."""

    address: Optional[str] = field(
        default=None,
        metadata={"help": "Ray cluster to join (e.g. ray://head:10001, auto); default: RAY_ADDRESS's, else a new local one"},
    )
    actors: Optional[int] = field(
        default=None,
        metadata={"help": "Ray actors, each with its own pipeline (default: one per GPU, else one per CPU share)"},
    )
    gpus_per_actor: Optional[float] = field(
        default=None, metadata={"help": "GPUs Ray reserves per actor (default: 1 when the cluster has GPUs, else 0)"}
    )
    cpus_per_actor: float = field(default=1.0, metadata={"help": "CPUs Ray reserves per actor; its torch threads"})

    def __post_init__(self):
        from .errors import ApplyError

        if self.actors is not None and self.actors < 1:
            raise ApplyError(f"actors must be at least 1 (got {self.actors}), or None for one per GPU or CPU share.")
        if self.cpus_per_actor <= 0 or (self.gpus_per_actor is not None and self.gpus_per_actor < 0):
            raise ApplyError(
                f"cpus_per_actor must be positive and gpus_per_actor at least 0 "
                f"(got {self.cpus_per_actor} and {self.gpus_per_actor})."
            )


def ray_help(name: str) -> str:
    """The help text of RayOptions' field `name`."""
    return next(option.metadata["help"] for option in fields(RayOptions) if option.name == name)
