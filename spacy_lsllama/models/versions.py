"""Registered architectures as views of another one: older versions, and
architectures that take another's settings plus their own.

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

    annotations = {key: value for key, value in current.__annotations__.items() if key not in dropped}
    return _presented(version, older, name=name, module=current.__module__, doc=doc, annotations=annotations)


def extended(
    base: Callable[..., Any], build: Callable[..., Any], *, name: str, doc: str
) -> Callable[..., Any]:
    """An architecture taking every setting of `base` plus the keyword
    parameters of `build` (placed after `base`'s required ones); `build` is
    called with its own parameters and the rest of the settings as
    `**settings`, to pass on to `base`."""
    base_parameters = list(inspect.signature(base).parameters.values())
    own = [p for p in inspect.signature(build).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    required = [p for p in base_parameters if p.default is inspect.Parameter.empty]
    optional = [p for p in base_parameters if p.default is not inspect.Parameter.empty]
    own_required = [p for p in own if p.default is inspect.Parameter.empty]
    own_optional = [p for p in own if p.default is not inspect.Parameter.empty]
    signature = inspect.signature(base).replace(parameters=[*required, *own_required, *own_optional, *optional])
    own_names = {p.name for p in own}

    def architecture(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        mine = {key: value for key, value in bound.arguments.items() if key in own_names}
        settings = {key: value for key, value in bound.arguments.items() if key not in own_names}
        return build(**mine, **settings)

    annotations = {key: value for key, value in {**base.__annotations__, **build.__annotations__}.items() if key != "settings"}
    signature = signature.replace(return_annotation=inspect.signature(build).return_annotation)
    return _presented(architecture, signature, name=name, module=build.__module__, doc=doc, annotations=annotations)


def _presented(
    function: Callable[..., Any], signature: inspect.Signature, *, name: str, module: str, doc: str, annotations: Dict[str, Any]
) -> Callable[..., Any]:
    """`function` as spaCy's registry and entry points see it: the signature
    that configs are validated against, its name, module and docstring."""
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__name__ = function.__qualname__ = name
    function.__module__ = module
    function.__doc__ = doc
    function.__annotations__ = annotations
    return function
