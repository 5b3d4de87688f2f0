"""The output folder of `apply`: one file per input shard, and a manifest.

    OUTPUT/apply.json            what the run was: pipeline, input files, keys, shard size, format
    OUTPUT/part-00000.jsonl      the rows of shard 0 (or .parquet), in input order
    OUTPUT/docs/part-00000.spacy the annotated docs of shard 0 (with --docbin)

Exactly once. Shard i of the input always becomes `part-i`: shards are
numbered in input order (readers.py), so the name of a shard's output does not
depend on which process wrote it, or when. Each file is written atomically
(writers.py), and the rows file is renamed into place last, so its existence
is what marks the shard complete. A shard written twice (a Ray task retried
after its actor died, two overlapping runs) is replaced by an identical file;
a shard whose writer died has no rows file and is written again by the next
run. A rerun skips complete shards: the manifest makes sure that it is the
same job (same pipeline, same input files, same settings), so no output
mixes two runs.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ApplyError
from ..persistence.atomic import TEMPORARY_MARK, write_file_atomically
from .writers import SUFFIXES, WRITERS, read_rows

MANIFEST = "apply.json"
DOCS = "docs"
VERSION = 1
# What must match for a rerun to continue an earlier run, and how to name it.
COMPARED = {
    "version": "output layout version",
    "pipeline": "pipeline",
    "input": "input path",
    "files": "input files (names, sizes or modification times)",
    "input_format": "input format",
    "text_key": "text key",
    "id_key": "id key",
    "shard_size": "shard size",
    "shard_count": "number of shards",
    "output_format": "output format",
    "docbin": "DocBin shards (--docbin)",
}


@dataclass(frozen=True)
class OutputFolder:
    """Where each shard's files go. Plain fields: it is sent to Ray actors."""

    path: str
    output_format: str = "jsonl"
    docbin: bool = False
    width: int = 5  # digits of the shard numbers, so file names sort in shard order

    def part_path(self, index: int) -> Path:
        return Path(self.path) / f"part-{index:0{self.width}d}{SUFFIXES[self.output_format]}"

    def docbin_path(self, index: int) -> Path:
        return Path(self.path) / DOCS / f"part-{index:0{self.width}d}.spacy"

    def is_complete(self, index: int) -> bool:
        return self.part_path(index).exists()

    def write_shard(self, index: int, rows: List[Dict[str, Any]], docbin=None) -> None:
        """Write shard `index`: its DocBin first (when asked for), its rows
        last, since the rows file is the shard's completion mark."""
        if docbin is not None:
            write_file_atomically(self.docbin_path(index), docbin.to_disk)
        write_file_atomically(self.part_path(index), lambda path: WRITERS[self.output_format](rows, path))

    def prepare(self, manifest: Dict[str, Any]) -> None:
        """Create the folder for a new run, or check that an existing one holds
        the same job; then drop temporary files that killed writers left."""
        path = Path(self.path)
        if path.exists() and not path.is_dir():
            raise ApplyError(f"Output {path} is a file: the output is a folder of shards. Choose a folder path.")
        if (path / MANIFEST).exists():
            earlier = read_manifest(path)
            differences = [label for key, label in COMPARED.items() if earlier.get(key) != manifest.get(key)]
            if differences:
                raise ApplyError(
                    f"{path} holds the output of another run: its {'; '.join(differences)} differ from this one's. "
                    f"Write to a new output folder, or delete {path} to start over."
                )
        elif path.exists() and any(path.iterdir()):
            raise ApplyError(f"{path} is not empty and was not written by apply (it has no {MANIFEST}). Choose a new output folder.")
        else:
            path.mkdir(parents=True, exist_ok=True)
            write_file_atomically(path / MANIFEST, lambda temporary: temporary.write_text(json.dumps(manifest, indent=2)))
        if self.docbin:
            (path / DOCS).mkdir(exist_ok=True)
        for folder in (path, path / DOCS):
            for leftover in folder.glob(f".part-*{TEMPORARY_MARK}*"):
                leftover.unlink()


def output_folder(path: Path, manifest: Dict[str, Any]) -> OutputFolder:
    return OutputFolder(
        str(Path(path).resolve()),
        manifest["output_format"],
        manifest["docbin"],
        max(5, len(str(max(manifest["shard_count"] - 1, 0)))),
    )


def read_manifest(path: Path) -> Dict[str, Any]:
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ApplyError(f"{path} is not the output of apply: it has no {MANIFEST}.") from None
    except json.JSONDecodeError as error:
        raise ApplyError(f"{Path(path) / MANIFEST} is damaged ({error}); delete {path} and run again.") from None


def missing_shards(path: Path) -> List[int]:
    """The shards of the run in `path` that are not complete yet."""
    manifest = read_manifest(path)
    folder = output_folder(path, manifest)
    return [index for index in range(manifest["shard_count"]) if not folder.is_complete(index)]


def read_results(path: Path, allow_incomplete: bool = False) -> List[Dict[str, Any]]:
    """Every output row of the run in `path`, in input order.

    Raises ApplyError when shards are missing (an interrupted run), unless
    `allow_incomplete`, which returns the rows of the complete shards."""
    path = Path(path)
    manifest = read_manifest(path)
    folder = output_folder(path, manifest)
    missing = [index for index in range(manifest["shard_count"]) if not folder.is_complete(index)]
    if missing and not allow_incomplete:
        names = ", ".join(folder.part_path(index).name for index in missing[:3])
        raise ApplyError(
            f"{path} is incomplete: {len(missing)} of {manifest['shard_count']} shards are missing ({names}"
            f"{', ...' if len(missing) > 3 else ''}). Run the same apply command again to finish it."
        )
    rows: List[Dict[str, Any]] = []
    skipped = set(missing)
    for index in range(manifest["shard_count"]):
        if index not in skipped:
            rows.extend(read_rows(folder.part_path(index)))
    return rows


def build_manifest(
    *, pipeline: Dict[str, Any], source: Path, shards, input_format: str, text_key: str, id_key: Optional[str],
    shard_size: int, output_format: str, docbin: bool,
) -> Dict[str, Any]:
    files = []
    for shard in shards:
        if not files or files[-1]["name"] != shard.file.name:
            files.append({"name": shard.file.name, "format": shard.file.format, "size": shard.file.size, "mtime_ns": shard.file.mtime_ns})
    return {
        "version": VERSION,
        "pipeline": pipeline,
        "input": str(Path(source).resolve()),
        "files": files,
        "input_format": input_format,
        "text_key": text_key,
        "id_key": id_key,
        "shard_size": shard_size,
        "shard_count": len(shards),
        "output_format": output_format,
        "docbin": docbin,
    }
