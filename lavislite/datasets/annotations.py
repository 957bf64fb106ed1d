"""Reading and validating annotation files (JSON lists or JSON Lines).

Every record is checked against a small schema when the file is loaded, so a bad record fails (or is
skipped and counted) before training starts, with a message naming the file, the record index and the
field. Files that are not valid UTF-8 are decoded leniently only to find which records hold the bad
bytes; those records are the ones reported (or skipped).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lavislite.common.errors import DataError

logger = logging.getLogger(__name__)

SKIP_HINT = "Fix the record, or set run.skip_bad_samples=true to skip (and count) bad records."


@dataclass(frozen=True)
class Field:
    """One field of a record: accepted types, whether required, and how list items must look.

    ``kind`` is one of ``str`` (non-empty after strip), ``int``, ``str_or_int``, ``str_list`` (a
    non-empty list of non-empty strings), ``str_or_str_list``, ``pair`` (two non-empty strings),
    ``label`` ("True"/"False" or a bool), ``any``.
    """

    name: str
    kind: str
    required: bool = True


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _check_value(kind: str, v: Any) -> str | None:
    """None when ``v`` fits ``kind``; else what is wrong with it."""
    if kind == "any":
        return None
    if kind == "str":
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__} {v!r:.60}"
        return None if v.strip() else "is empty"
    if kind == "int":
        return None if isinstance(v, int) and not isinstance(v, bool) else f"must be an int, got {type(v).__name__} {v!r:.60}"
    if kind == "str_or_int":
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return f"must be a string or an int, got {type(v).__name__} {v!r:.60}"
        return None if not isinstance(v, str) or v.strip() else "is empty"
    if kind in ("str_list", "str_or_str_list", "pair"):
        if kind == "str_or_str_list" and isinstance(v, str):
            return None if v.strip() else "is empty"
        if not isinstance(v, list):
            what = "a string or a list of strings" if kind == "str_or_str_list" else "a list of strings"
            return f"must be {what}, got {type(v).__name__} {v!r:.60}"
        if not v:
            return "is an empty list"
        if kind == "pair" and len(v) != 2:
            return f"must list exactly 2 entries, got {len(v)}"
        for i, item in enumerate(v):
            if not isinstance(item, str):
                return f"item {i} must be a string, got {type(item).__name__} {item!r:.60}"
            if not item.strip():
                return f"item {i} is empty"
        return None
    if kind == "label":
        return None if v in ("True", "False") or isinstance(v, bool) else f"must be \"True\" or \"False\", got {v!r:.60}"
    raise ValueError(f"unknown field kind {kind!r}")


def record_problem(record: Any, fields: Sequence[Field]) -> tuple[str, str] | None:
    """``(field, problem)`` for the first field of ``record`` that breaks the schema, else None."""
    if not isinstance(record, dict):
        return "-", f"the record must be a JSON object, got {type(record).__name__} {record!r:.60}"
    for f in fields:
        if f.name not in record or record[f.name] is None:
            if f.required:
                return f.name, "is missing"
            continue
        problem = _check_value(f.kind, record[f.name])
        if problem:
            return f.name, problem
    return None


def _has_replacement_char(value: Any) -> str | None:
    """The dotted name of the first string inside ``value`` holding U+FFFD (an undecodable byte)."""
    if isinstance(value, str):
        return "" if "\ufffd" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "\ufffd" in k:
                return str(k)
            sub = _has_replacement_char(v)
            if sub is not None:
                return f"{k}.{sub}" if sub else str(k)
    if isinstance(value, list):
        for i, v in enumerate(value):
            sub = _has_replacement_char(v)
            if sub is not None:
                return f"{i}.{sub}" if sub else str(i)
    return None


def _parse(path: Path, text: str) -> list[Any]:
    if path.suffix == ".jsonl":
        out = []
        # split on \n only: str.splitlines() also breaks at U+2028/U+0085 etc., which occur inside captions
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except RecursionError as exc:
                raise DataError(f"{path}: line {lineno} is nested too deeply to parse; a record must be a flat JSON object") from exc
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno} is not valid JSON ({exc.msg}, column {exc.colno}). Fix that line.") from exc
        return out
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise DataError(f"{path}: JSON nested too deeply to parse; the file must be a list of flat records") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. Fix the file (or re-download it).") from exc
    if not isinstance(data, list):
        raise DataError(
            f"{path}: the top level must be a JSON list of records, got {type(data).__name__}. "
            f"See docs/datasets.md for the expected format."
        )
    return data


def read_records(path: str | Path) -> tuple[list[Any], dict[int, str]]:
    """The records of a JSON list (or ``.jsonl``) file, plus ``{record index: field}`` of records holding
    bytes that are not UTF-8 (empty for a clean file)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc
    bad_utf8: dict[int, str] = {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8-sig", errors="replace")
        records = _parse(path, text)
        for i, rec in enumerate(records):
            where = _has_replacement_char(rec)
            if where is not None:
                bad_utf8[i] = where or "-"
        if not bad_utf8:  # bad bytes outside any string (cannot happen in valid JSON, but be exact)
            raise DataError(f"{path}: not UTF-8 text (byte offset {exc.start}); save the file as UTF-8") from exc
        return records, bad_utf8
    return _parse(path, text), bad_utf8


@dataclass
class AnnotationTable:
    """Validated records from one or more files, each remembering where it came from."""

    records: list[dict] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)  # (file index, record index in that file)
    files: list[Path] = field(default_factory=list)
    num_skipped: int = 0

    def where(self, i: int) -> str:
        """``"<file>, record <n>"`` of the i-th kept record."""
        f, r = self.origins[i]
        return f"{self.files[f]}, record {r}"


def load_annotations(
    paths: Iterable[str | Path],
    fields: Sequence[Field],
    *,
    skip_bad: bool = False,
    keep: Callable[[dict], bool] | None = None,
    check: Callable[[dict], tuple[str, str] | None] | None = None,
) -> AnnotationTable:
    """Read and validate every record of ``paths``.

    ``keep`` drops records silently (e.g. another split's records in a shared file); ``check`` adds a
    dataset-specific check returning ``(field, problem)``. A bad record raises DataError naming file,
    record index and field, unless ``skip_bad``: then it is logged, skipped and counted.
    """
    table = AnnotationTable()
    for path in paths:
        path = Path(path)
        file_idx = len(table.files)
        table.files.append(path)
        records, bad_utf8 = read_records(path)
        for i, rec in enumerate(records):
            if i in bad_utf8:
                problem: tuple[str, str] | None = (bad_utf8[i], "is not valid UTF-8 text")
            else:
                problem = record_problem(rec, fields)
                if problem is None and check is not None:
                    problem = check(rec)
            if problem is None and keep is not None and not keep(rec):
                continue
            if problem is not None:
                msg = f"{path}: record {i}: field '{problem[0]}' {problem[1]}."
                if not skip_bad:
                    raise DataError(f"{msg} {SKIP_HINT}")
                logger.warning("skipping a bad annotation: %s", msg)
                table.num_skipped += 1
                continue
            table.records.append(rec)
            table.origins.append((file_idx, i))
    return table
