"""Loading the pipeline that `apply` runs, with an optional base override.

`--base PATH` points every spacy-lsllama transformer of the pipeline to another
copy of its base model, the way `spacy.load(path, config={"components.
transformer.model.name": PATH})` does; the override is found from the
pipeline's own config, so components with other names work too. The base is
still checked against the identity the pipeline recorded (spacy_lsllama/
loading.py): a wrong base is refused, not silently used.
"""
import hashlib
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .errors import ApplyError

ARCHITECTURE_PREFIX = "spacy-lsllama."


def pipeline_folder(pipeline: Union[str, Path]) -> Optional[Path]:
    """The folder that holds the pipeline's config.cfg: the pipeline itself,
    or the data folder of an installed pipeline package; None if neither."""
    path = Path(pipeline)
    if path.is_dir():
        return path
    import spacy.util

    if isinstance(pipeline, str) and spacy.util.is_package(pipeline):
        package = spacy.util.get_package_path(pipeline)
        for config in [package / "config.cfg", *sorted(package.glob("*/config.cfg"))]:
            if config.is_file():
                return config.parent
    return None


def base_overrides(pipeline: Union[str, Path], base: Optional[Union[str, Path]]) -> Dict[str, str]:
    """The spacy.load config overrides that point the pipeline to `base`."""
    if base is None:
        return {}
    from thinc.api import Config

    folder = pipeline_folder(pipeline)
    if folder is None or not (folder / "config.cfg").is_file():
        raise ApplyError(f"Pipeline {pipeline} not found: pass the folder written by nlp.to_disk or spacy train, or an installed pipeline package.")
    config = Config().from_disk(folder / "config.cfg", interpolate=False)
    keys = [
        f"components.{name}.model.name"
        for name, component in config.get("components", {}).items()
        if isinstance(component.get("model"), dict)
        and str(component["model"].get("@architectures", "")).startswith(ARCHITECTURE_PREFIX)
        and "name" in component["model"]
    ]
    if not keys:
        raise ApplyError(
            f"--base: {pipeline} has no component that loads a base model (a merged pipeline carries its "
            "own weights). Drop --base."
        )
    return {key: str(base) for key in keys}


def load_pipeline(pipeline: Union[str, Path], *, base: Optional[Union[str, Path]] = None):
    """spacy.load with the base override. A missing pipeline is an ApplyError;
    a missing or wrong base keeps the loader's own error, which says how to
    point elsewhere."""
    import spacy

    if pipeline_folder(pipeline) is None:
        raise ApplyError(
            f"Pipeline {pipeline} not found: pass the folder written by nlp.to_disk or spacy train "
            "(e.g. training/model-best), or the name of an installed pipeline package."
        )
    return spacy.load(pipeline, config=base_overrides(pipeline, base))


def pipeline_stamp(pipeline: Any) -> Dict[str, Any]:
    """What identifies the pipeline for a rerun: a folder by its path and the
    names, sizes and modification times of its files (retraining into the same
    folder changes them); a package by name and version; a pipeline object by
    its name, version and config."""
    from spacy.language import Language

    if isinstance(pipeline, Language):
        digest = hashlib.sha256(pipeline.config.to_str().encode("utf-8")).hexdigest()
        meta = pipeline.meta
        return {"name": f"{meta.get('lang')}_{meta.get('name')}", "version": meta.get("version"), "config": digest}
    folder = pipeline_folder(pipeline)
    if folder is None:
        raise ApplyError(f"Pipeline {pipeline} not found: pass the folder written by nlp.to_disk or spacy train, or an installed pipeline package.")
    if Path(pipeline).is_dir():
        digest = hashlib.sha256()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"path": str(folder.resolve()), "files": digest.hexdigest()}
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version(str(pipeline))
    except PackageNotFoundError:
        package_version = None
    return {"package": str(pipeline), "version": package_version}
