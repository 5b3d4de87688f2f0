"""Output rows of `apply` and the files that hold them.

One row per input record:

    {"source": "corpus.jsonl", "id": 17, "text": "...",
     "ents": [{"start": 7, "end": 13, "label": "LOC"}],   # character offsets into text
     "cats": {"POS": 0.93, "NEG": 0.07}}

`source` is the input file relative to the input folder, `id` the record's id
(see readers.py). Rows are written as JSONL (UTF-8, one object per line) or
Parquet (`ents` a list of structs, `cats` a map from label to float64, so a
pipeline without a text classifier still has a valid, empty `cats`).

Every file is written atomically (persistence/atomic.py): into a hidden
temporary file beside its final name, flushed to disk, then renamed over it.
A reader therefore sees a complete file or none, however the writer dies.
"""
import json
from pathlib import Path
from typing import Any, Callable, Dict, List

from .errors import ApplyError
from .readers import require_pyarrow_parquet

SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}


def result_row(source: str, record_id: Any, doc) -> Dict[str, Any]:
    """The output row of one annotated doc."""
    return {
        "source": source,
        "id": record_id,
        "text": doc.text,
        "ents": [{"start": ent.start_char, "end": ent.end_char, "label": ent.label_} for ent in doc.ents],
        "cats": {label: float(score) for label, score in doc.cats.items()},
    }


def write_jsonl(rows: List[Dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as file_:
        for row in rows:
            file_.write(json.dumps(row, ensure_ascii=False) + "\n")


def parquet_schema(id_type):
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("id", id_type),
            ("text", pa.string()),
            ("ents", pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("label", pa.string())]))),
            ("cats", pa.map_(pa.string(), pa.float64())),
        ]
    )


def write_parquet(rows: List[Dict[str, Any]], path: Path) -> None:
    parquet = require_pyarrow_parquet("write Parquet output")
    import pyarrow as pa

    try:
        ids = pa.array([row["id"] for row in rows])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        sources = sorted({row["source"] for row in rows})
        raise ApplyError(
            f"The ids of {', '.join(sources)} mix strings and integers, which one Parquet column "
            "cannot hold. Make them all strings, or write JSONL (--output-format jsonl)."
        ) from None
    columns = {
        "source": [row["source"] for row in rows],
        "id": ids,
        "text": [row["text"] for row in rows],
        "ents": [row["ents"] for row in rows],
        "cats": [list(row["cats"].items()) for row in rows],
    }
    parquet.write_table(pa.table(columns, schema=parquet_schema(ids.type)), path)


WRITERS: Dict[str, Callable[[List[Dict[str, Any]], Path], None]] = {"jsonl": write_jsonl, "parquet": write_parquet}


def read_rows(path: Path) -> List[Dict[str, Any]]:
    """The rows of one output file, `cats` as a dict whatever the format."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as file_:
            return [json.loads(line) for line in file_ if line.strip()]
    parquet = require_pyarrow_parquet("read Parquet output")
    rows = parquet.read_table(path).to_pylist()
    for row in rows:
        row["cats"] = dict(row["cats"])
    return rows


def new_docbin():
    """A DocBin for annotated docs, filled doc by doc (it copies each doc's
    arrays, so the docs themselves, and their hidden states, need not be
    kept). No user data: hidden states stay out."""
    from spacy.tokens import DocBin

    return DocBin(store_user_data=False)
