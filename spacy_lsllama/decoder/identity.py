"""What identifies the base model of a pipeline, and where it is.

A saved pipeline holds LoRA adapters and a reference to its base, not the base
weights. Adapters are only meaningful on the weights they were trained on, so
the reference records:

- where the base is (`locate_base`): a local folder, resolved to an absolute
  path, or a Hugging Face hub id with its revision. A name that looks like a
  path is always a path and never falls through to a hub lookup;
- its config (`config_fields`): the fields of `config.json` as they are saved,
  minus those that only say how the file was written or how a model is
  loaded. They are stored, not only hashed, so that a mismatch names the
  fields, and a field that one transformers release writes and another leaves
  to its default is no difference (`config_differences`);
- its weights (`read_weights`): for every tensor of the safetensors files, its
  name, dtype, shape and a digest of 4 windows of 64 bytes of its data, spread
  over the tensor. Only the file headers and 256 bytes per tensor are read:
  for LLaMA-2-7B, 2 headers of ~25 KB and 291 x 256 bytes (~75 KB, at most
  ~4.6 MB of disk pages), against 13.5 GB of weights. The identity does not
  depend on how the tensors are sharded or ordered in the files. A finetune
  that changes a tensor as a whole (full finetuning, merged LoRA, continued
  pretraining) is told apart; a change confined to a few rows of a tensor
  that no window covers is not. `pytorch_model.bin` checkpoints (pickles,
  whose tensors cannot be listed without unpickling) are identified by the
  size and 64 windows of each file instead.

Nothing here imports model code or unpickles anything: files are read as bytes
and JSON only.
"""
import functools
import hashlib
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

FOLDER = "folder"
HUB = "hub"

# config.json fields that do not change the decoder's hidden states: how and
# by which release the file was written, how the model is loaded, and what
# only generation reads.
VOLATILE_CONFIG_FIELDS = frozenset(
    {
        "transformers_version",
        "torch_dtype",
        "dtype",
        "architectures",
        "use_cache",
        "attn_implementation",
        "quantization_config",
        "bos_token_id",
        "eos_token_id",
    }
)

SAMPLES_PER_TENSOR = 4
SAMPLE_BYTES = 64
SAMPLES_PER_PICKLE_FILE = 64
MAX_HEADER_BYTES = 100 * 2**20
SHOWN_NAMES = 3

# Hub ids: "name" or "org/name", letters, digits, ".", "_" and "-", no "--" or "..".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_DRIVE = re.compile(r"^[A-Za-z]:")


class BaseModelError(OSError):
    """The base model of a pipeline cannot be found or is not the one it was trained on."""


class BaseIdentityWarning(UserWarning):
    """A base is used whose identity could not be checked, or was accepted although it differs."""


# Where the base is -------------------------------------------------------------


@dataclass(frozen=True)
class BaseLocation:
    """A base model's resolved location: an absolute folder path, or a hub id."""

    kind: str  # FOLDER or HUB
    where: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        if self.kind == FOLDER:
            return self.where
        return f"{self.where} (Hugging Face hub, revision {self.revision or 'main'})"


def why_a_path(name: str) -> Optional[str]:
    """Why `name` must be a local path and cannot be a hub id, or None when it
    can be either. Hub ids are "name" or "org/name" made of letters, digits,
    ".", "_" and "-"; anything else, or an "org/name" whose "org" is a folder
    in the working directory, is a path."""
    if name.startswith(("/", "~", ".")):
        return "it starts with '/', '~' or '.'"
    if "\\" in name or _DRIVE.match(name):
        return "it has a backslash or a drive letter"
    if name.count("/") > 1 or name.endswith("/"):
        return "it has more parts than a hub id's org/name"
    if not _HUB_ID.match(name) or "--" in name or ".." in name:
        return "it is not a valid hub id"
    first, _, rest = name.partition("/")
    if rest and Path(first).is_dir():
        return f"the folder {first}{os.sep} exists in the working directory"
    return None


def locate_base(name: str, revision: Optional[str] = None, *, saved_kind: Optional[str] = None) -> BaseLocation:
    """Resolve a configured base `name` without touching the network.

    An existing folder is a folder, whatever its name looks like. A missing
    name that looks like a path (`why_a_path`), or that a saved pipeline
    recorded as a local folder (`saved_kind`), is an error: it is never looked
    up on the hub, where anyone may have published a repo under that name."""
    path = Path(name).expanduser()
    if path.is_dir():
        return BaseLocation(FOLDER, str(path.resolve()))
    if path.exists():
        raise BaseModelError(
            f"The base model {name!r} is a file ({path.resolve()}), not a folder: point name "
            "to the folder that holds config.json and the weights, or to a hub id."
        )
    reason = why_a_path(name)
    if reason is None and saved_kind == FOLDER:
        reason = "the pipeline was trained on a local folder of that name"
    if reason is not None:
        raise BaseModelError(
            f"The base model folder {name!r} does not exist (looked for {path.absolute()}). "
            f"The name is read as a local path, not as a Hugging Face hub id, because {reason}."
        )
    return BaseLocation(HUB, name, revision)


def find_file(location: BaseLocation, filename: str) -> Optional[Path]:
    """A file of the base: from its folder, or from the Hugging Face cache (which
    downloads it when the hub is reachable, as from_pretrained would)."""
    if location.kind == FOLDER:
        path = Path(location.where) / filename
        return path if path.is_file() else None
    from transformers.utils.hub import cached_file

    try:
        found = cached_file(
            location.where,
            filename,
            revision=location.revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError) as error:
        raise BaseModelError(f"Cannot read {filename} of the base model {location}: {error}") from error
    return None if found is None else Path(found)


# Its config --------------------------------------------------------------------


def config_fields(raw: Dict[str, Any]) -> Dict[str, Any]:
    """The fields of a config.json, as saved, that define the decoder."""
    return {
        key: value
        for key, value in raw.items()
        if key not in VOLATILE_CONFIG_FIELDS and not key.startswith("_")
    }


def read_config_fields(location: BaseLocation) -> Dict[str, Any]:
    path = find_file(location, "config.json")
    if path is None:
        raise BaseModelError(f"The base model {location} has no config.json.")
    try:
        raw = json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError) as error:
        raise BaseModelError(f"The config.json of the base model {location} cannot be read: {error}") from error
    if not isinstance(raw, dict):
        raise BaseModelError(f"The config.json of the base model {location} is not a JSON object.")
    return config_fields(raw)


_ABSENT = object()


def default_value(fields: Dict[str, Any], key: str) -> Any:
    """The value transformers gives `key` when a config.json with `fields` does
    not set it (a field a newer release adds, such as LlamaConfig.head_dim),
    or _ABSENT when the model type is unknown or has no such field. Only
    transformers' own config classes are used, never code from a repository."""
    try:
        from transformers import CONFIG_MAPPING

        config_class = CONFIG_MAPPING[fields["model_type"]]
        config = config_class(**{k: v for k, v in fields.items() if k != "model_type"})
        return config.to_dict().get(key, _ABSENT)
    except Exception:  # an unknown model type, or fields its config class rejects
        return _ABSENT


def config_differences(trained_on: Dict[str, Any], found: Dict[str, Any]) -> List[str]:
    """One line per config field whose value differs. A field set on one side
    only differs when the other side's default for it is another value."""
    lines = []
    for key in sorted(set(trained_on) | set(found)):
        a = trained_on.get(key, _ABSENT)
        b = found.get(key, _ABSENT)
        if a is _ABSENT:
            a = default_value(trained_on, key)
        if b is _ABSENT:
            b = default_value(found, key)
        if _canonical(a) != _canonical(b):
            lines.append(f"config.json {key}: {_show(a)} in the base it was trained on, {_show(b)} in this one")
    return lines


def _canonical(value: Any) -> Any:
    if value is _ABSENT:
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    return "not set" if value is _ABSENT else json.dumps(value, default=str)


# Its weights -------------------------------------------------------------------

TensorEntry = Tuple[str, Tuple[int, ...], str]  # dtype, shape, digest of sampled bytes


@dataclass(frozen=True)
class WeightsIdentity:
    """Every tensor's dtype, shape and sampled-bytes digest, by name."""

    format: str  # "safetensors" or "pickle"
    tensors: Dict[str, TensorEntry]


WEIGHT_FILES = (
    ("safetensors", "model.safetensors", "model.safetensors.index.json"),
    ("pickle", "pytorch_model.bin", "pytorch_model.bin.index.json"),
)


def weight_files(location: BaseLocation) -> Tuple[str, List[Path]]:
    """The files from_pretrained reads the weights from (safetensors first, as
    transformers prefers them), with their format."""
    for format, single, index in WEIGHT_FILES:
        path = find_file(location, single)
        if path is not None:
            return format, [path]
        index_path = find_file(location, index)
        if index_path is not None:
            try:
                shards = sorted(set(json.loads(index_path.read_text(encoding="utf8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                raise BaseModelError(f"The weights index {index_path} of {location} cannot be read: {error}") from error
            paths = []
            for shard in shards:
                shard_path = find_file(location, shard)
                if shard_path is None:
                    raise BaseModelError(f"The base model {location} lacks {shard}, listed in {index}.")
                paths.append(shard_path)
            return format, paths
    raise BaseModelError(
        f"The base model {location} has no weights: expected model.safetensors, "
        "model.safetensors.index.json with its shards, or pytorch_model.bin."
    )


def read_weights(location: BaseLocation) -> WeightsIdentity:
    format, paths = weight_files(location)
    tensors: Dict[str, TensorEntry] = {}
    for path in paths:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        entries = _safetensors_entries(*key) if format == "safetensors" else _pickle_file_entries(*key)
        tensors.update(entries)
    return WeightsIdentity(format, tensors)


# Keyed on the file's inode, size and times: a file that was replaced or
# rewritten is read again, an unchanged one is read once per process.
@functools.lru_cache(maxsize=64)
def _safetensors_entries(path: str, *stat_key: int) -> Dict[str, TensorEntry]:
    try:
        with _mapped(path) as data:
            (header_size,) = struct.unpack("<Q", _read_exactly(data, 0, 8))
            if header_size > MAX_HEADER_BYTES:
                raise ValueError(f"a header of {header_size} bytes")
            header = json.loads(_read_exactly(data, 8, header_size))
            start = 8 + header_size
            entries = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                shape = tuple(int(n) for n in info["shape"])
                entries[name] = (str(info["dtype"]), shape, _sample_digest(data, start + begin, start + end, SAMPLES_PER_TENSOR))
            return entries
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BaseModelError(
            f"{path} is not a valid safetensors file ({type(error).__name__}: {error}). "
            "The download may be incomplete: fetch the base model again."
        ) from error


@functools.lru_cache(maxsize=64)
def _pickle_file_entries(path: str, *stat_key: int) -> Dict[str, TensorEntry]:
    try:
        with _mapped(path) as data:
            digest = _sample_digest(data, 0, len(data), SAMPLES_PER_PICKLE_FILE)
            return {Path(path).name: ("file", (len(data),), digest)}
    except (OSError, ValueError) as error:
        raise BaseModelError(f"{path} cannot be read ({type(error).__name__}: {error}).") from error


def _mapped(path: str) -> mmap.mmap:
    """The file, memory-mapped read-only: a sample costs a slice, not a read
    call, and only the pages sampled are touched."""
    with open(path, "rb") as file:
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def _sample_digest(data: mmap.mmap, begin: int, end: int, samples: int) -> str:
    """A digest of `samples` windows of SAMPLE_BYTES spread evenly over
    [begin, end) of `data`, first and last windows included; positions are
    relative to `begin`, so the digest does not depend on where the data sits."""
    size = end - begin
    digest = hashlib.blake2b(digest_size=8)
    if size <= samples * SAMPLE_BYTES:
        digest.update(_read_exactly(data, begin, size))
        return digest.hexdigest()
    step = (size - SAMPLE_BYTES) / (samples - 1)
    for i in range(samples):
        digest.update(_read_exactly(data, begin + int(round(i * step)), SAMPLE_BYTES))
    return digest.hexdigest()


def _read_exactly(data: mmap.mmap, position: int, size: int) -> bytes:
    """`size` bytes at `position`, or a ValueError if the file ends first."""
    if position < 0 or size < 0 or position + size > len(data):
        raise ValueError(f"the file ends before byte {position + size}")
    return data[position : position + size]


def weights_differences(trained_on: WeightsIdentity, found: WeightsIdentity) -> List[str]:
    """One line per kind of difference, naming the first tensors of each."""
    if trained_on.format != found.format:
        return [
            f"weights: stored as {trained_on.format} in the base it was trained on, as "
            f"{found.format} in this one, so they cannot be compared"
        ]
    a, b = trained_on.tensors, found.tensors
    common = sorted(set(a) & set(b))
    relaid = [name for name in common if a[name][:2] != b[name][:2]]
    changed = [name for name in common if a[name][:2] == b[name][:2] and a[name][2] != b[name][2]]
    kinds = [
        ("are missing from this base", sorted(set(a) - set(b))),
        ("are in this base only", sorted(set(b) - set(a))),
        ("have another dtype or shape", [f"{name} {_layout(a[name])} -> {_layout(b[name])}" for name in relaid]),
        ("hold other values", changed),
    ]
    lines = []
    for what, names in kinds:
        if names:
            more = ", ..." if len(names) > SHOWN_NAMES else ""
            lines.append(f"weights: {len(names)} of {len(a)} tensors {what} ({', '.join(names[:SHOWN_NAMES])}{more})")
    return lines


def _layout(entry: TensorEntry) -> str:
    dtype, shape, _ = entry
    return f"{dtype} {tuple(shape)}"


# The whole identity ------------------------------------------------------------


@dataclass(frozen=True)
class BaseIdentity:
    """A base's config fields and weights; `digest` names it in one string."""

    config: Dict[str, Any]
    weights: WeightsIdentity

    @functools.cached_property
    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode("utf8")).hexdigest()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "config": self.config,
            "weights": {
                "format": self.weights.format,
                "tensors": {name: [dtype, list(shape), digest] for name, (dtype, shape, digest) in self.weights.tensors.items()},
            },
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BaseIdentity":
        weights = data["weights"]
        tensors = {
            name: (str(dtype), tuple(int(n) for n in shape), str(digest))
            for name, (dtype, shape, digest) in weights["tensors"].items()
        }
        return cls(config=dict(data["config"]), weights=WeightsIdentity(str(weights["format"]), tensors))


def read_base_identity(location: BaseLocation) -> BaseIdentity:
    """Read the identity of the base at `location` (config.json, headers, samples)."""
    return BaseIdentity(config=read_config_fields(location), weights=read_weights(location))


@dataclass(frozen=True)
class IdentifiedBase:
    """A base as found now: where it is and what it is."""

    location: BaseLocation
    identity: BaseIdentity


def identity_differences(trained_on: BaseIdentity, found: BaseIdentity, *, weights: bool = True) -> List[str]:
    """What differs between the base a pipeline was trained on and the one found."""
    lines = config_differences(trained_on.config, found.config)
    if weights:
        lines += weights_differences(trained_on.weights, found.weights)
    return lines


# Accepting another base deliberately --------------------------------------------

ACCEPT_BASE_ENV = "SPACY_LSLLAMA_ACCEPT_BASE"
SHORT_DIGEST = 16
MIN_ACCEPTED_DIGEST = 12


def short_digest(identity: BaseIdentity) -> str:
    return identity.digest[:SHORT_DIGEST]


def accepted_by_caller(identity: BaseIdentity, environ=os.environ) -> bool:
    """Whether SPACY_LSLLAMA_ACCEPT_BASE names this base: a comma-separated list
    of digests (at least 12 leading hex digits, as printed in the mismatch
    error), or "*" for any base."""
    digest = identity.digest
    for value in environ.get(ACCEPT_BASE_ENV, "").split(","):
        value = value.strip().lower()
        if value == "*" or (len(value) >= MIN_ACCEPTED_DIGEST and digest.startswith(value)):
            return True
    return False
