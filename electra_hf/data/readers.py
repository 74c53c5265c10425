"""Reading local files (text, JSON lines / JSON arrays, Parquet) into the line format.

The line format: one column ``text`` where each row is either one non-blank,
whitespace-stripped line of a document, or ``""``, which ends a document. Every document ends
with exactly one ``""`` (so the last row is ``""``) and there are no two ``""`` in a row.

* Text files (plain or ``.gz``; anything that is not ``.json``/``.jsonl``/``.parquet``) are in
  the official input format: one sentence (or line) per line, blank lines between documents.
  The end of each file also ends a document, as the official ``build_pretraining_dataset.py``
  flushes at the end of every input file.
* JSON lines / JSON arrays / Parquet rows are one document each; newlines inside the text
  separate the lines of that document, and blank lines inside a document are dropped (they do
  *not* split it).

Every reader validates as it goes and raises an error naming the file (and the line, element
or row) of the first problem.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

READ_BLOCK_BYTES = 8 << 20  # text files are decoded in 8 MiB blocks (fast, exact line numbers)
DOCUMENTS_PER_BATCH = 10_000  # JSON/Parquet documents turned into rows at a time

_JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_PARQUET_SUFFIXES = (".parquet",)


def resolve_files(patterns: Sequence[str], flag: str) -> list[str]:
    """Expand globs (sorted); raise FileNotFoundError naming the pattern/flag that matches nothing."""
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            raise IsADirectoryError(
                f"{flag}: {pattern!r} is a directory; pass files or a glob such as '{pattern}/*.txt.gz'."
            )
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"{flag}: the pattern {pattern!r} matches no file.")
            files.extend(matches)
        elif os.path.isfile(pattern):
            files.append(pattern)
        else:
            raise FileNotFoundError(f"{flag}: no such file: {pattern!r}.")
    return [os.path.abspath(f) for f in files]


def _file_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(_JSON_SUFFIXES):
        return "json"
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _decode(data: bytes, path: str, first_line: int, first_offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{path}: invalid UTF-8 at line {line} (byte offset {first_offset + err.start} of the "
            f"{'decompressed ' if path.lower().endswith('.gz') else ''}file): {err.reason}"
        ) from None


def _iter_text_file_lines(path: str) -> Iterator[list[str]]:
    """Yield the lines (without newline) of a text file in blocks, validating UTF-8 as it goes.

    Decoding ~8 MiB blocks split at a newline is much faster than line by line and still lets
    an error name the exact line and byte offset.
    """
    lines_before = 0
    offset = 0
    carry = b""
    first = True
    try:
        with _open_binary(path) as handle:
            while True:
                block = handle.read(READ_BLOCK_BYTES)
                if first:
                    first = False
                    if block.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM
                        block, offset = block[3:], 3
                if not block:
                    break
                data = carry + block
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no newline in this block yet: one very long line, keep reading
                    carry = data
                    continue
                lines = _decode(data[:cut], path, lines_before, offset).split("\n")
                lines.pop()  # "" after the final newline
                carry = data[cut:]
                yield lines
                lines_before += len(lines)
                offset += cut
            if carry:
                yield [_decode(carry, path, lines_before, offset)]
    except (OSError, EOFError, zlib.error) as err:  # a truncated or corrupt .gz
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from err


def _iter_json_documents(path: str, text_column: str) -> Iterator[str]:
    """Yield the text field of each row of a JSON-lines file (or a JSON array of objects)."""
    with _open_binary(path) as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"["):  # a JSON array
        with _open_binary(path) as handle:
            data = handle.read()
        try:
            rows = json.loads(_decode(data, path, 0, 0).lstrip("\ufeff"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
        for i, row in enumerate(rows):
            yield _json_text(row, path, f"element {i}", text_column)
        return
    with _open_binary(path) as handle:
        offset = 0
        for lineno, raw in enumerate(handle, 1):
            line = _decode(raw, path, lineno - 1, offset).lstrip("\ufeff").strip()
            offset += len(raw)
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
            yield _json_text(row, path, f"line {lineno}", text_column)


def _json_text(row: Any, path: str, where: str, text_column: str) -> str:
    if not isinstance(row, dict):
        raise ValueError(
            f"{path}: {where}: expected a JSON object with a {text_column!r} field, got {type(row).__name__}."
        )
    if text_column not in row:
        raise ValueError(
            f"{path}: {where}: no {text_column!r} field (fields: {sorted(row)}); set --text_column."
        )
    text = row[text_column]
    if not isinstance(text, str):
        raise ValueError(f"{path}: {where}: field {text_column!r} is {type(text).__name__}, not a string.")
    return text


def _iter_parquet_documents(path: str, text_column: str) -> Iterator[str]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise ValueError(f"{path}: cannot read as Parquet ({type(err).__name__}: {err})") from err
    schema = parquet.schema_arrow
    if text_column not in schema.names:
        raise ValueError(f"{path}: no column {text_column!r} (columns: {schema.names}); set --text_column.")
    column_type = schema.field(text_column).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise ValueError(f"{path}: column {text_column!r} has type {column_type}, not string.")
    row = 0
    for batch in parquet.iter_batches(batch_size=1000, columns=[text_column]):
        for text in batch.column(0).to_pylist():
            if text is None:
                raise ValueError(f"{path}: row {row}: column {text_column!r} is null.")
            row += 1
            yield text


def document_rows(texts: Iterable[Optional[str]]) -> list[str]:
    """The line-format rows of whole documents: each document's stripped non-blank lines and a
    closing ``""``; blank lines inside a document are dropped (they do not split it), and a
    document with no text (or ``None``) gives no rows."""
    rows: list[str] = []
    for text in texts:
        lines = [s for s in (line.strip() for line in text.split("\n")) if s] if text is not None else []
        if lines:
            rows.extend(lines)
            rows.append("")
    return rows


def read_documents_as_lines(
    path: str, text_column: str = "text", blanks_separate_docs: bool = True
) -> Iterator[list[str]]:
    """Read one local file and yield batches of rows in the line format (see the module docstring).

    Raises ``ValueError`` naming the file for an empty file (or one with no text), invalid
    UTF-8 (with line and byte offset), invalid JSON/Parquet, or a missing ``text_column``.
    """
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: the file is empty.")
    kind = _file_kind(path)
    if kind == "text":
        batches = _text_file_rows(path, blanks_separate_docs)
    else:
        reader = _iter_json_documents if kind == "json" else _iter_parquet_documents
        batches = _document_rows(reader(path, text_column))
    n_rows = 0  # a "" row only follows a line of text, so any row means the file has text
    for batch in batches:
        n_rows += len(batch)
        yield batch
    if n_rows == 0:
        raise ValueError(f"{path}: the file contains no text.")


def _text_file_rows(path: str, blanks_separate_docs: bool) -> Iterator[list[str]]:
    previous_blank = True  # no "" before the first line of text
    for lines in _iter_text_file_lines(path):
        out = []
        for line in lines:
            line = line.strip()
            if line:
                out.append(line)
                previous_blank = False
            elif blanks_separate_docs and not previous_blank:
                out.append("")
                previous_blank = True
        if out:
            yield out
    if not previous_blank:  # the end of a file ends a document (official: flush per file)
        yield [""]


def _document_rows(documents: Iterator[str]) -> Iterator[list[str]]:
    while batch := list(itertools.islice(documents, DOCUMENTS_PER_BATCH)):
        rows = document_rows(batch)
        if rows:
            yield rows
