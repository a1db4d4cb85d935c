"""Request logs as `tierwise audit` and `tierwise label` read them, cut into chunks.

Logs are JSONL (OpenAI chat requests `{"model", "messages"}`, OpenAI Batch API lines `{"body": {...}}`,
`{"text"}`, `{"prompt"}` or Responses-style `{"input"}`), plain text (`.txt`: one prompt per line) or
Parquet (a `text`, `prompt`, `messages` or `input` column).

`plan_chunks` cuts the logs into chunks of `batch_size` requests (byte ranges of JSONL/text files,
row ranges inside Parquet row groups) with a fast byte scan; `chunk_requests` parses one chunk. A
chunk is small and picklable, so an engine can send it to another process or node (Ray Data).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tierwise.core.request_text import (
    ClassifierInput,
    RequestTextError,
    content_text,
    request_input,
    request_strings,
)

PARQUET_TEXT_COLUMNS = ("text", "prompt", "messages", "input")


class AuditError(ValueError):
    """A log cannot be read; the message says what to change."""


def logged_request(record: Any) -> ClassifierInput:
    """What the classifier reads of one logged request; raises RequestTextError naming what is missing."""
    if isinstance(record, str):
        if not record.strip():
            raise RequestTextError("the line is empty")
        return ClassifierInput.plain(record)
    if not isinstance(record, Mapping):
        raise RequestTextError("row must be a JSON object or a string")
    if isinstance(record.get("body"), Mapping):  # OpenAI Batch API: {"custom_id", "method", "url", "body"}
        return logged_request(record["body"])
    if record.get("messages") is not None or record.get("text") is not None:
        return request_input(record)
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return ClassifierInput.plain(prompt)
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and "".join(prompt).strip():
        return ClassifierInput.plain("\n".join(prompt))
    given = record.get("input")
    if isinstance(given, str) and given.strip():
        return ClassifierInput.plain(given)
    if isinstance(given, list) and given:
        messages = [m for m in given if isinstance(m, Mapping)]
        if messages:
            read = request_input({"messages": [{**m, "content": content_text_any(m)} for m in messages]})
            # The privacy rule reads every string of the items as logged (function calls included).
            return replace(read, strings=request_strings({"messages": given}))
    raise RequestTextError("row needs 'messages', 'text', 'prompt', 'input' or an OpenAI batch 'body'")


def request_text(record: Any) -> str:
    """Every word of one logged request."""
    return logged_request(record).text


def content_text_any(message: Mapping[str, Any]) -> str:
    """Responses-API content parts use `input_text`; chat uses `text`."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [
            p.get("text", "")
            for p in content
            if isinstance(p, Mapping) and p.get("type") in {"text", "input_text"}
        ]
        return "\n".join(str(p) for p in parts)
    return content_text(content)


@dataclass(frozen=True)
class Chunk:
    """Up to `batch_size` consecutive requests of one log file, classified as one batch."""

    path: str
    kind: str  # jsonl | text | parquet
    start: int  # jsonl/text: byte offset; parquet: row offset within the row group
    stop: int  # jsonl/text: byte offset (exclusive); parquet: row offset (exclusive)
    first_line: int  # jsonl/text: 1-based line number of the first line; parquet: row group index
    rows: int  # lines (jsonl/text) or rows (parquet) in the chunk


def log_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".txt"):
        return "text"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise AuditError(
        f"{path}: unknown log format; use .jsonl (OpenAI requests), .txt (one prompt a line) or .parquet"
    )


def plan_chunks(paths: Sequence[Path], batch_size: int) -> list[Chunk]:
    """The chunks of every log, in file order (a fast byte scan; nothing is parsed here)."""
    if batch_size < 1:
        raise AuditError("--batch-size must be at least 1")
    chunks: list[Chunk] = []
    for path in paths:
        if not path.is_file():
            raise AuditError(f"log file {path} does not exist")
        kind = log_kind(path)
        if kind == "parquet":
            chunks.extend(_parquet_chunks(path, batch_size))
        else:
            chunks.extend(_line_chunks(path, kind, batch_size))
    return chunks


def _line_chunks(path: Path, kind: str, batch_size: int) -> Iterator[Chunk]:
    start = offset = 0
    first_line = line_number = 1
    lines = 0
    with open(path, "rb") as stream:
        for raw in stream:
            offset += len(raw)
            lines += 1
            line_number += 1
            if lines == batch_size:
                yield Chunk(str(path), kind, start, offset, first_line, lines)
                start, first_line, lines = offset, line_number, 0
    if lines:
        yield Chunk(str(path), kind, start, offset, first_line, lines)


def _parquet_chunks(path: Path, batch_size: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        for start in range(0, rows, batch_size):
            stop = min(rows, start + batch_size)
            yield Chunk(str(path), "parquet", start, stop, group, stop - start)


def chunk_requests(chunk: Chunk) -> list[tuple[str, ClassifierInput | None, str | None]]:
    """(location, what the classifier reads, error) for each request of a chunk, in order."""
    out: list[tuple[str, ClassifierInput | None, str | None]] = []
    if chunk.kind == "parquet":
        for index, value in enumerate(_parquet_values(chunk)):
            where = f"{chunk.path}: row group {chunk.first_line}, row {chunk.start + index}"
            try:
                if isinstance(value, list):
                    value = {"messages": value}
                out.append((where, logged_request(value), None))
            except RequestTextError as err:
                out.append((where, None, str(err)))
        return out
    with open(chunk.path, "rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.stop - chunk.start)
    for index, raw in enumerate(data.splitlines()):
        where = f"{chunk.path}:{chunk.first_line + index}"
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((where, None, "not valid UTF-8"))
            continue
        try:
            if chunk.kind == "text":
                out.append((where, logged_request(line.rstrip("\r\n")), None))
            else:
                out.append((where, logged_request(json.loads(line)), None))
        except json.JSONDecodeError as err:
            out.append((where, None, f"invalid JSON ({err.msg})"))
        except RequestTextError as err:
            out.append((where, None, str(err)))
    return out


_ROW_GROUP_CACHE: dict[tuple[str, int], list[Any]] = {}


def _parquet_values(chunk: Chunk) -> list[Any]:
    import pyarrow.parquet as pq

    key = (chunk.path, chunk.first_line)
    if key not in _ROW_GROUP_CACHE:
        parquet = pq.ParquetFile(chunk.path)
        names = parquet.schema_arrow.names
        column = next((c for c in PARQUET_TEXT_COLUMNS if c in names), None)
        if column is None:
            raise AuditError(
                f"{chunk.path} has no text column; name one of {', '.join(PARQUET_TEXT_COLUMNS)} (has {names})"
            )
        _ROW_GROUP_CACHE.clear()  # one row group at a time per process
        table = parquet.read_row_group(chunk.first_line, columns=[column])
        _ROW_GROUP_CACHE[key] = table.column(column).to_pylist()
    return _ROW_GROUP_CACHE[key][chunk.start : chunk.stop]
