"""`lsllama_merged_transformer`: a transformer component that stores its decoder
in the pipeline, as a Hugging Face folder.

A pipeline saved with spaCy's `transformer` component holds only the LoRA
adapters and a reference to the base model, which is found again by name when
the pipeline loads. After `python -m spacy_lsllama merge`, the adapters are
baked into the base weights and the result must travel with the pipeline. This
component (a spacy-transformers `Transformer`) keeps them in its own folder:

    PIPELINE/transformer/cfg
    PIPELINE/transformer/base/    config.json, model*.safetensors, tokenizer files

`from_disk` loads the decoder from that `base/` folder, wherever the pipeline
has been moved, and `to_disk` writes the current weights there with
`save_pretrained` (safetensors, sharded past 5 GB): spaCy's own pattern of
component state living in the component's folder. No weights go into msgpack.

Its model is a `spacy-lsllama.LlamaTransformer` (any version) with `lora = null`. `name`
is only read by `nlp.initialize()` (e.g. to fully finetune a base and store it
like this); a saved component always loads its own `base/` folder, as spaCy
components load their weights from their folder whatever the config says.
`to_bytes`/`from_bytes` (nlp.to_bytes, copying a pipeline) carry the same
`base/` folder: its files (safetensors, config, tokenizer) travel inside the
bytes, so they need no base and no folder anywhere. `from_bytes` writes them
to a temporary folder and loads the decoder from there exactly as `from_disk`
does. The folder is kept while the component lives, because, as after
`from_disk`, the decoder's `name` points at it: copying or pickling the model
and `nlp.initialize()` load the decoder from there again. It is removed when
the component is garbage collected or loads another decoder. Like any msgpack
field, the bytes are limited to 4 GiB per component.
"""
import dataclasses
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Union

import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline.pipe import deserialize_config
from spacy.tokens import Doc
from spacy_transformers.data_classes import FullTransformerBatch
from spacy_transformers.pipeline_component import DOC_EXT_ATTR, Transformer
from thinc.api import Model

from ..decoder.defaults import MAX_BATCH_PIECES
from ..decoder.loading import BaseModelError, trust_at_load_time
from ..decoder.settings import SettingsError
from .atomic import write_folder_atomically

FACTORY = "lsllama_merged_transformer"
BASE_FOLDER = "base"


def decoder_shim(model: Model):
    """The decoder of this component's model, or an error that names the factory."""
    from ..decoder.shim import find_decoder_shim

    try:
        return find_decoder_shim(model)
    except SettingsError as error:
        raise SettingsError(f"The {FACTORY} component needs a spacy-lsllama.LlamaTransformer model. {error}") from error


@Language.factory(
    FACTORY,
    assigns=[f"doc._.{DOC_EXT_ATTR}"],
    default_config={
        "max_batch_items": MAX_BATCH_PIECES,
        "set_extra_annotations": {"@annotation_setters": "spacy-transformers.null_annotation_setter.v1"},
    },
)
def make_merged_transformer(
    nlp: Language,
    name: str,
    model: Model[List[Doc], FullTransformerBatch],
    set_extra_annotations: Callable[[List[Doc], FullTransformerBatch], None],
    max_batch_items: int,
) -> "MergedTransformer":
    """A transformer component whose full decoder weights are saved in its folder."""
    settings = decoder_shim(model).settings
    if settings.lora is not None:
        raise SettingsError(
            f"The {FACTORY} component stores full weights and takes lora = null; for "
            'LoRA adapters use factory = "transformer".'
        )
    return MergedTransformer(nlp.vocab, model, set_extra_annotations, max_batch_items=max_batch_items, name=name)


def write_base(folder: Path, transformer, tokenizer) -> None:
    """A Hugging Face folder that `AutoModel`/`AutoTokenizer.from_pretrained` load:
    the decoder (without LM head) as safetensors, and the tokenizer with the pad
    token and padding side spacy-lsllama gave it.

    The folder is written beside the target and swapped in (atomic.py), so a
    save that fails leaves the previous folder intact, never a mix of old and
    new shards."""

    def write(staging: Path) -> None:
        transformer.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    write_folder_atomically(Path(folder), write)


# The temporary base folders of components restored with from_bytes, each
# removed by its finalizer. Held here, not on the component, so that the
# component's attributes stay plain and picklable.
_BYTES_FOLDERS: "weakref.WeakKeyDictionary[MergedTransformer, weakref.finalize]" = weakref.WeakKeyDictionary()


def _release_bytes_folder(component: "MergedTransformer") -> None:
    """Remove the temporary folder a component's previous decoder came from."""
    remove = _BYTES_FOLDERS.pop(component, None)
    if remove is not None:
        remove()


def base_files(transformer, tokenizer) -> Dict[str, bytes]:
    """The files `write_base` writes, by their path in the folder: the form of
    the `base/` folder inside `to_bytes`."""
    with tempfile.TemporaryDirectory(prefix="lsllama-merged-") as tmp:
        folder = Path(tmp) / BASE_FOLDER
        write_base(folder, transformer, tokenizer)
        return {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }


def write_files(folder: Path, files: Dict[str, bytes]) -> None:
    """Write `base_files` output back into a folder; paths that would leave
    it (absolute, or with `..`) are refused, as bytes may come from anywhere."""
    root = folder.resolve()
    for relative, data in files.items():
        path = (folder / relative).resolve()
        if Path(relative).is_absolute() or root not in path.parents:
            raise SettingsError(f"The {FACTORY} bytes hold a file outside its base folder: {relative!r}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class MergedTransformer(Transformer):
    """spacy-transformers' Transformer, saving its decoder as `base/` in its folder."""

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        shim = decoder_shim(self.model)
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "vocab": lambda p: self.vocab.to_disk(p),
            BASE_FOLDER: lambda p: write_base(p, shim.encoder.transformer, shim.loaded_tokenizer()),
        }
        util.to_disk(path, serialize, exclude)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "MergedTransformer":
        deserialize = {
            "vocab": self.vocab.from_disk,
            "cfg": lambda p: self.cfg.update(deserialize_config(p)),
            BASE_FOLDER: self._load_base,
        }
        util.from_disk(path, deserialize, exclude)  # type: ignore[arg-type]
        if BASE_FOLDER not in exclude:
            _release_bytes_folder(self)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """The component with its decoder as the files of its `base/` folder."""
        shim = decoder_shim(self.model)
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "vocab": lambda: self.vocab.to_bytes(exclude=exclude),
            BASE_FOLDER: lambda: base_files(shim.encoder.transformer, shim.loaded_tokenizer()),
        }
        return util.to_bytes(serialize, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "MergedTransformer":
        """Restore what `to_bytes` wrote; the decoder loads from a temporary copy
        of its `base/` folder, so nothing depends on the working directory."""
        deserialize = {
            "cfg": lambda b: self.cfg.update(srsly.json_loads(b)),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            BASE_FOLDER: self._load_base_files,
        }
        util.from_bytes(bytes_data, deserialize, exclude)
        return self

    def _load_base_files(self, files: Dict[str, bytes]) -> None:
        """Load the decoder from a temporary `base/` folder holding `files`,
        kept until this component is collected or loads another decoder."""
        tmp = tempfile.mkdtemp(prefix="lsllama-merged-")
        remove = weakref.finalize(self, shutil.rmtree, tmp, True)
        try:
            folder = Path(tmp) / BASE_FOLDER
            write_files(folder, files)
            self._load_base(folder)
        except BaseException:
            remove()
            raise
        _release_bytes_folder(self)
        _BYTES_FOLDERS[self] = remove

    def _load_base(self, folder: Path) -> None:
        if not (folder / "config.json").is_file():
            raise BaseModelError(
                f"The {FACTORY} component has no decoder in {folder}: the folder is missing "
                "or incomplete. Copy the whole pipeline directory, or merge the pipeline again."
            )
        shim = decoder_shim(self.model)
        # The folder's config cannot opt in to running its own code (loading.trust_at_load_time).
        shim.settings = dataclasses.replace(
            shim.settings,
            name=str(Path(folder).resolve()),
            revision=None,
            trust_remote_code=trust_at_load_time(shim.settings),
        )
        shim.load_pretrained()
        self.model.set_dim("nO", shim.hidden_size, force=True)
