"""Older registered versions of an architecture, as views of the current one.

A registered name is frozen once released: a config written for
`spacy-lsllama.LlamaTransformer.v2` must keep validating exactly as it did, so
v2 may not accept a setting that v3 added. Rather than copying the current
function's signature once per version, an older version is the current
function with some parameters taken away (and, where the version had other
defaults, its settings adjusted before the call). spaCy validates a config
against `inspect.signature`, which reads the signature given here.
"""
import inspect
from typing import Any, Callable, Dict, Iterable, Optional


def older_version(
    current: Callable[..., Any],
    *,
    name: str,
    without: Iterable[str],
    doc: str,
    adjust: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
) -> Callable[..., Any]:
    """`current` under the signature it had before `without` were added.

    name: the Python name the version is known by (its entry point's target).
    adjust: turns the version's settings into the current function's (other
        defaults of that version); None keeps them as they are."""
    dropped = set(without)
    signature = inspect.signature(current)
    unknown = dropped - set(signature.parameters)
    if unknown:
        raise ValueError(f"{current.__name__} has no parameter(s) {sorted(unknown)}")
    older = signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in dropped])

    def version(*args: Any, **kwargs: Any) -> Any:
        bound = older.bind(*args, **kwargs)
        bound.apply_defaults()
        settings = dict(bound.arguments)
        return current(**(adjust(settings) if adjust is not None else settings))

    version.__signature__ = older  # type: ignore[attr-defined]
    version.__name__ = version.__qualname__ = name
    version.__module__ = current.__module__
    version.__doc__ = doc
    version.__annotations__ = {key: value for key, value in current.__annotations__.items() if key not in dropped}
    return version
