"""Inputs of `apply`: which files, which shards, and the records of one shard.

Formats, told apart by extension (or forced with `input_format`):

    .txt               plain text, one doc per line (an empty line is an empty doc)
    .jsonl / .ndjson   one JSON object per line, text under `text_key`; blank lines are skipped
    .parquet           a table with a string column `text_key`
    .spacy             a DocBin; its docs go through the pipeline as they are (like `spacy apply`)

A folder is read recursively, files in the order of their relative paths,
hidden files skipped. Planning splits every file into shards of `shard_size`
records (a shard never spans two files) and numbers them in input order, so
the same input always gives the same shards: that is what lets a rerun skip
the shards an earlier run completed.

Ids. A record's id is the value of `id_key` when the file has that field (for
JSONL, when the file's first record has it; every record must then have it),
otherwise its position: the line number for line files (1-based, as editors
and the error messages count), the row number for Parquet and DocBin files
(0-based, as pyarrow and pandas count). Within a folder, join on (source, id).

Planning reads text files once to find the byte offset of every shard (a line
count, no decoding), Parquet files' metadata only, and DocBin files whole.
Reading a shard then touches only its own bytes (rows, for Parquet; a DocBin
is read whole each time). Records are decoded and checked when their shard is
read, wherever that runs: a bad record stops the run with its file and line.
"""
import json
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import ApplyError

EXTENSIONS = {".txt": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".spacy": "spacy"}
FORMATS = ("text", "jsonl", "parquet", "spacy")
LINE_FORMATS = ("text", "jsonl")
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class InputFile:
    """One input file, as planned: its identity (size, mtime) lets a rerun
    tell whether the input changed since the shards on disk were written."""

    path: str  # absolute
    name: str  # relative to the input folder (the file name for a single file): the rows' `source`
    format: str
    size: int
    mtime_ns: int
    uses_id: bool = False  # every record carries `id_key`


@dataclass(frozen=True)
class Shard:
    """Records [start, stop) of one file. `start` and `stop` count lines
    (1-based) for line formats, rows (0-based) otherwise; `offset` and `length`
    are the shard's bytes in a line file."""

    index: int
    file: InputFile
    start: int
    stop: int
    offset: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        """Records in the shard (for JSONL, an upper bound: blank lines are skipped)."""
        return self.stop - self.start

    def to_row(self) -> Dict[str, Any]:
        """A flat dict of plain values (a Ray Data row)."""
        row = {key: value for key, value in asdict(self).items() if key != "file"}
        row.update({f"file_{key}": value for key, value in asdict(self.file).items()})
        return row

    @classmethod
    def from_row(cls, row: Dict[str, Any]) -> "Shard":
        file = InputFile(**{key[5:]: _plain(value) for key, value in row.items() if key.startswith("file_")})
        fields = {key: _plain(value) for key, value in row.items() if not key.startswith("file_")}
        return cls(file=file, **fields)


@dataclass(frozen=True)
class Record:
    id: Any
    content: Any  # a str, or a spaCy Doc for DocBin input


def _plain(value):
    """A Python value from a NumPy scalar (Ray Data batches hold NumPy values)."""
    return value.item() if hasattr(value, "item") else value


# Which files ---------------------------------------------------------------------------


def list_input_files(source: Path, input_format: str = "auto") -> List[Tuple[Path, str, str]]:
    """(path, name, format) of every input file under `source`, in input order."""
    if input_format != "auto" and input_format not in FORMATS:
        raise ApplyError(f"Unknown input format {input_format!r}: use auto, {', '.join(FORMATS)}.")
    if not source.exists():
        raise ApplyError(f"Input {source} does not exist.")
    if source.is_file():
        return [(source, source.name, _format_of(source, input_format))]
    files = []
    for path in sorted(source.rglob("*"), key=lambda path: path.relative_to(source).as_posix()):
        relative = path.relative_to(source)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if input_format == "auto" and path.suffix.lower() not in EXTENSIONS:
            continue
        files.append((path, relative.as_posix(), _format_of(path, input_format)))
    if not files:
        raise ApplyError(
            f"Input folder {source} holds no input files ({', '.join(EXTENSIONS)}); "
            "pass --input-format to read files with other names."
        )
    return files


def _format_of(path: Path, input_format: str) -> str:
    if input_format != "auto":
        return input_format
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise ApplyError(
            f"Cannot tell the format of {path} from its extension {path.suffix!r}: name it "
            f"{', '.join(EXTENSIONS)}, or pass --input-format {'|'.join(FORMATS)}."
        ) from None


# Planning ------------------------------------------------------------------------------


def plan_shards(
    source: Union[str, Path], *, shard_size: int, text_key: str = "text", id_key: Optional[str] = "id",
    input_format: str = "auto",
) -> List[Shard]:
    """Every shard of the input, numbered in input order."""
    if shard_size < 1:
        raise ApplyError(f"The shard size must be at least 1 (got {shard_size}).")
    shards: List[Shard] = []
    for path, name, format in list_input_files(Path(source), input_format):
        stat = path.stat()
        base = dict(path=str(path.resolve()), name=name, format=format, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        if format in LINE_FORMATS:
            file, ranges = _plan_lines(path, base, shard_size, text_key, id_key)
        elif format == "parquet":
            file, ranges = _plan_parquet(path, base, shard_size, text_key, id_key)
        else:
            file, ranges = _plan_docbin(path, base, shard_size)
        for start, stop, offset, length in ranges:
            shards.append(Shard(len(shards), file, start, stop, offset, length))
    return shards


def _plan_lines(path: Path, base: Dict, shard_size: int, text_key: str, id_key: Optional[str]):
    if base["size"] == 0:
        raise ApplyError(f"{path} is empty: give it one {'JSON record' if base['format'] == 'jsonl' else 'text'} per line.")
    ranges = []
    first_record = None
    with open(path, "rb") as file_:
        offset = start_offset = 0
        start = number = 1
        for number, line in enumerate(file_, start=1):
            if base["format"] == "jsonl" and first_record is None and line.strip():
                first_record = _parse_json(_decode(line, path, number, offset), path, number)
            offset += len(line)
            if number - start + 1 == shard_size:
                ranges.append((start, number + 1, start_offset, offset - start_offset))
                start, start_offset = number + 1, offset
        if start <= number:
            ranges.append((start, number + 1, start_offset, offset - start_offset))
    uses_id = False
    if base["format"] == "jsonl":
        if first_record is None:
            raise ApplyError(f"{path} has no records: every line is blank. Give it one JSON object per line.")
        uses_id = bool(id_key) and id_key in first_record
    return InputFile(**base, uses_id=uses_id), ranges


def _plan_parquet(path: Path, base: Dict, shard_size: int, text_key: str, id_key: Optional[str]):
    parquet = require_pyarrow_parquet("read Parquet input")
    try:
        file_ = parquet.ParquetFile(path)
        metadata, rows = file_.schema_arrow, file_.metadata.num_rows
    except Exception as error:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise ApplyError(f"{path} is not a readable Parquet file: {error}") from error
    columns = list(metadata.names)
    if text_key not in columns:
        raise ApplyError(
            f"{path} has no column {text_key!r} (its columns: {', '.join(columns)}). "
            "Pass --text-key with the column that holds the text."
        )
    kind = str(metadata.field(text_key).type)
    if kind not in ("string", "large_string", "string_view"):
        raise ApplyError(f"{path}: column {text_key!r} holds {kind}, not strings. Pass --text-key with the text column.")
    if rows == 0:
        raise ApplyError(f"{path} is empty: it has no rows.")
    uses_id = bool(id_key) and id_key in columns
    ranges = [(start, min(start + shard_size, rows), 0, 0) for start in range(0, rows, shard_size)]
    return InputFile(**base, uses_id=uses_id), ranges


def _plan_docbin(path: Path, base: Dict, shard_size: int):
    count = len(_load_docbin(path))
    if count == 0:
        raise ApplyError(f"{path} is empty: the DocBin holds no docs.")
    ranges = [(start, min(start + shard_size, count), 0, 0) for start in range(0, count, shard_size)]
    return InputFile(**base), ranges


# Reading one shard ----------------------------------------------------------------------


def read_shard(shard: Shard, *, text_key: str = "text", id_key: Optional[str] = "id", vocab=None) -> List[Record]:
    """The records of `shard`, checked. `vocab` is needed for DocBin input."""
    format = shard.file.format
    path = Path(shard.file.path)
    if not path.exists():
        raise ApplyError(f"Input file {path} does not exist (here).")
    if format == "text":
        return [Record(number, text) for number, text in _lines(shard)]
    if format == "jsonl":
        return _jsonl_records(shard, text_key, id_key)
    if format == "parquet":
        return _parquet_records(shard, text_key, id_key)
    if vocab is None:
        raise ValueError("read_shard needs the pipeline's vocab for DocBin input")
    docs = _load_docbin(path).get_docs(vocab)
    return [Record(row, doc) for row, doc in zip(range(shard.start, shard.stop), islice(docs, shard.start, shard.stop))]


def _lines(shard: Shard):
    """(line number, decoded line without its line break) for every line of the shard."""
    path = Path(shard.file.path)
    with open(path, "rb") as file_:
        file_.seek(shard.offset)
        data = file_.read(shard.length)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    if len(lines) != shard.size:
        raise ApplyError(
            f"{path} changed since the run was planned (lines {shard.start}-{shard.stop - 1} are not where "
            "they were). Do not edit inputs during a run; start again with a new output folder."
        )
    offset = shard.offset
    for number, line in enumerate(lines, start=shard.start):
        text = _decode(line, path, number, offset)
        offset += len(line) + 1
        yield number, text[:-1] if text.endswith("\r") else text


def _decode(line: bytes, path: Path, number: int, offset: int) -> str:
    if offset == 0 and line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM):]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApplyError(
            f"{path}, line {number}: not valid UTF-8 ({error.reason} at character {error.start + 1} of the line, "
            f"bytes {line[error.start:error.end]!r}). Convert the file to UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`."
        ) from None


def _parse_json(line: str, path: Path, number: int) -> Dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ApplyError(f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}).") from None
    if not isinstance(record, dict):
        raise ApplyError(f"{path}, line {number}: a JSON object is expected, not {type(record).__name__}.")
    return record


def _jsonl_records(shard: Shard, text_key: str, id_key: Optional[str]) -> List[Record]:
    path = Path(shard.file.path)
    records = []
    for number, line in _lines(shard):
        if not line.strip():
            continue
        record = _parse_json(line, path, number)
        if text_key not in record:
            fields = ", ".join(repr(key) for key in record) or "none"
            raise ApplyError(
                f"{path}, line {number}: the record has no {text_key!r} field (its fields: {fields}). "
                "Pass --text-key with the field that holds the text."
            )
        text = record[text_key]
        if not isinstance(text, str):
            raise ApplyError(
                f"{path}, line {number}: the {text_key!r} field must be a string, not {type(text).__name__} ({text!r})."
            )
        record_id = number
        if shard.file.uses_id:
            if id_key not in record:
                raise ApplyError(
                    f"{path}, line {number}: the record has no {id_key!r} field, but the file's first record "
                    "has one, so every record needs its id. Add it, or pass --id-key '' to number records by line."
                )
            record_id = _check_id(record[id_key], path, f"line {number}", id_key)
        records.append(Record(record_id, text))
    return records


def _check_id(value: Any, path: Path, where: str, id_key: str):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApplyError(f"{path}, {where}: the {id_key!r} field must be a string or an integer, not {value!r}.")
    return value


def _parquet_records(shard: Shard, text_key: str, id_key: Optional[str]) -> List[Record]:
    parquet = require_pyarrow_parquet("read Parquet input")
    path = Path(shard.file.path)
    file_ = parquet.ParquetFile(path)
    columns = [text_key] + ([id_key] if shard.file.uses_id else [])
    groups, first_row, row = [], None, 0
    for group in range(file_.metadata.num_row_groups):
        rows = file_.metadata.row_group(group).num_rows
        if row < shard.stop and row + rows > shard.start:
            groups.append(group)
            first_row = row if first_row is None else first_row
        row += rows
    table = file_.read_row_groups(groups, columns=columns).slice(shard.start - first_row, shard.size)
    texts = table.column(text_key).to_pylist()
    ids = table.column(id_key).to_pylist() if shard.file.uses_id else range(shard.start, shard.stop)
    records = []
    for row, text, record_id in zip(range(shard.start, shard.stop), texts, ids):
        if text is None:
            raise ApplyError(f"{path}, row {row}: the text is null. Drop the row or give it a text ('' is fine).")
        if shard.file.uses_id:
            record_id = _check_id(record_id, path, f"row {row}", id_key)
        records.append(Record(record_id, text))
    return records


def _load_docbin(path: Path):
    from spacy.tokens import DocBin

    try:
        return DocBin().from_disk(path)
    except Exception as error:  # msgpack, zlib and KeyError alike
        raise ApplyError(f"{path} is not a readable DocBin (.spacy) file: {type(error).__name__}: {error}") from error


def require_pyarrow_parquet(purpose: str):
    """pyarrow.parquet, or an error that says how to get it."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ApplyError(
            f"pyarrow is needed to {purpose}: `pip install pyarrow` (it also comes with "
            '`pip install "spacy-lsllama[ray]"`), or use JSONL.'
        ) from None
    return parquet
