"""Read a classification CSV into a Dataset, telling the user exactly what is wrong with it.

Rules (each decision can be overridden by config):

* Text: the file must be UTF-8 (a BOM is fine) without NUL bytes. Blank lines are skipped
  (they are not rows); every other line is a row and is never dropped silently.
* Delimiter (``data.delimiter``, default: detect): each of ``, ; TAB |`` splits the first
  1000 rows; a candidate's score is the share of rows that have its most common field count
  (0 when that count is 1). The best-scoring candidate wins; a tie (e.g. ``1,5;2,3`` rows,
  which both ``,`` and ``;`` split evenly) is ambiguous and raises. No candidate at all
  means a single column, which raises as "no features".
* Header (``data.header``, default "auto"): the first row is a header iff
  (a) none of its fields is a number, (b) at least one field is text (not a missing-value
  token such as "" or "NA"), and (c) none of its text fields reappears as a value in the
  same column below. (a) keeps numeric first rows such as RustNet's diabetes CSV as data;
  (c) keeps a first row like ``abc,yes`` over rows ``1,no`` / ``2,yes`` as data (so the bad
  value is reported, not swallowed as a header). Column names that are numbers therefore
  need ``data.header=true``. Without a header, features are named x0..x{d-1}, the label "label".
* Label (``data.label_column``): the last column by default; a header name, or a 0-based
  position (negative counts from the end). Every other column is a feature and must be
  numeric.
* Classes: numeric labels must be integers (1.0 counts as 1) and sort numerically, so
  labels 0..k-1 keep their indices; text labels sort as strings ("no" < "yes"). Labels
  look continuous, and raise, when any numeric value is not an integer, or there are more
  than ``MAX_CLASSES`` (50) distinct values, or more than 20 rows of which more than half
  hold distinct values. A single class raises.
* Missing values (empty, NA, N/A, NaN, null, None, ?, ...) and infinities in any used column
  raise, naming columns and counts, unless ``data.drop_na=true``, which drops those rows and
  warns with a ``DroppedRowsWarning`` carrying ``n_dropped`` and the line numbers.
  Non-numeric feature values are never dropped: they raise.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from stages.dataset import DataError, Dataset

MAX_CLASSES = 50
_CANDIDATES = (",", ";", "\t", "|")
_SAMPLE_ROWS = 1000
_MISSING = frozenset(
    {"", "na", "n/a", "nan", "-nan", "+nan", "null", "none", "<na>", "#n/a", "#na", "?"}
)
_NUMBER_PATTERN = r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)"
_NUMBER = re.compile(_NUMBER_PATTERN, re.IGNORECASE | re.ASCII)
# a whole column joined by NUL (which _read_text rules out inside fields): one C-level match
_ALL_NUMBERS = re.compile(
    f"(?:{_NUMBER_PATTERN})(?:\x00(?:{_NUMBER_PATTERN}))*", re.IGNORECASE | re.ASCII
)
_DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


class DroppedRowsWarning(UserWarning):
    """Rows dropped by ``data.drop_na=true``: ``n_dropped`` and their 1-based ``lines``."""

    def __init__(self, message: str, n_dropped: int, lines: tuple[int, ...]) -> None:
        super().__init__(message)
        self.n_dropped = n_dropped
        self.lines = lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _is_missing(field: str) -> bool:
    return field.lower() in _MISSING


def _is_number(field: str) -> bool:
    return _NUMBER.fullmatch(field) is not None


def _check_options(
    label_column: object, header: object, delimiter: object, drop_na: object
) -> str | None:
    """Validate the keyword options; returns the delimiter with aliases resolved."""
    if label_column is not None and (
        isinstance(label_column, bool) or not isinstance(label_column, str | int)
    ):
        raise DataError(
            f"data.label_column: {label_column!r} is not allowed; "
            "set it to a column name, a 0-based position, or null for the last column"
        )
    if not (header == "auto" or isinstance(header, bool)):
        raise DataError(f"data.header: {header!r} is not allowed; set it to auto, true or false")
    if not isinstance(drop_na, bool):
        raise DataError(f"data.drop_na: {drop_na!r} is not allowed; set it to true or false")
    if delimiter is None:
        return None
    if isinstance(delimiter, str):
        delimiter = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise DataError(
            f"data.delimiter: {delimiter!r} is not allowed; set it to one character "
            "such as ',' ';' '|' or tab, or null to detect it"
        )
    return delimiter


def _read_text(path: str | os.PathLike[str]) -> str:
    """The file's text; DataError for a missing, unreadable, binary or empty file."""
    p = Path(path)
    try:
        is_dir = p.is_dir()
        raw = b"" if is_dir else p.read_bytes()
    except FileNotFoundError as err:
        raise DataError(
            f"data.path: {str(p)!r} does not exist; point data.path at a CSV file"
        ) from err
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise DataError(
            f"data.path: cannot read {str(p)!r} ({reason}); point data.path at a readable file"
        ) from err
    if is_dir:
        raise DataError(
            f"data.path: {str(p)!r} is a directory; point data.path at a CSV file inside it"
        )
    if b"\x00" in raw:
        raise DataError(
            f"data.path: {str(p)!r} is not a text CSV (NUL byte at offset {raw.index(0)}: "
            "binary or UTF-16?); point data.path at a UTF-8 CSV file"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"data.path: {str(p)!r} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start} cannot be decoded); save it as UTF-8 CSV"
        ) from err
    if not text.strip():
        raise DataError(f"data.path: {str(p)!r} is empty; point data.path at a CSV with rows")
    return text


def _field_counts(text: str, delimiter: str) -> list[int]:
    """Field counts of the first non-blank rows when split by ``delimiter``."""
    counts: list[int] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if row and not (len(row) == 1 and not row[0].strip()):
                counts.append(len(row))
                if len(counts) >= _SAMPLE_ROWS:
                    break
    except csv.Error:
        pass  # the real parse reports it with a line number
    return counts


def _score(counts: list[int]) -> float:
    """Share of rows with the most common field count; 0 if that count is 1."""
    if not counts:
        return 0.0
    mode, freq = Counter(counts).most_common(1)[0]
    return 0.0 if mode == 1 else freq / len(counts)


def _detect_delimiter(text: str, shown: str) -> str:
    counts = {c: _field_counts(text, c) for c in _CANDIDATES}
    present = [c for c in _CANDIDATES if counts[c] and max(counts[c]) > 1]
    if not present:
        return ","
    if len(present) == 1:
        return present[0]
    ranked = sorted(present, key=lambda c: _score(counts[c]), reverse=True)
    if _score(counts[ranked[0]]) > _score(counts[ranked[1]]):
        return ranked[0]
    tied = [c for c in ranked if _score(counts[c]) == _score(counts[ranked[0]])]
    raise DataError(
        f"data.delimiter: cannot tell the delimiter of {shown} "
        f"({' and '.join(repr(c) for c in tied)} split its rows equally well); "
        "set data.delimiter to the right one"
    )


def _parse_rows(text: str, delimiter: str, shown: str) -> tuple[list[list[str]], list[int]]:
    """Non-blank rows with stripped fields, and the 1-based line each row starts on."""
    rows: list[list[str]] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous = 0
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                rows.append([field.strip() for field in row])
                lines.append(previous + 1)
            previous = reader.line_num
    except csv.Error as err:
        raise DataError(
            f"data.path: cannot parse line {reader.line_num} of {shown} ({err}); "
            "fix the quoting on that line or check data.delimiter"
        ) from err
    if not rows:
        raise DataError(f"data.path: {shown} has no rows, only blank fields; point data.path "
                        "at a CSV with rows")
    return rows, lines


def _check_row_lengths(rows: list[list[str]], lines: list[int], delimiter: str) -> None:
    expected = len(rows[0])
    bad = [i for i, row in enumerate(rows) if len(row) != expected]
    if bad:
        i = bad[0]
        side = "too many" if len(rows[i]) > expected else "too few"
        raise DataError(
            f"data.path: line {lines[i]} has {len(rows[i])} fields but line {lines[0]} has "
            f"{expected} ({side}; {_plural(len(bad), 'such row')} in all); fix those rows, "
            f"or set data.delimiter if {delimiter!r} is not the separator"
        )


def _looks_like_header(rows: list[list[str]]) -> bool:
    """The header rule of the module docstring: names, not numbers, not repeated below."""
    first = rows[0]
    if any(_is_number(f) for f in first):
        return False
    text_columns = [j for j, f in enumerate(first) if not _is_missing(f)]
    if not text_columns:
        return False
    return all(all(row[j] != first[j] for row in rows[1:]) for j in text_columns)


def _header_names(first: list[str]) -> list[str]:
    names = [f or f"x{j}" for j, f in enumerate(first)]
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        if name in seen:
            raise DataError(
                f"data.path: the header names column {name!r} twice (positions {seen[name]} "
                f"and {j}); rename one, or set data.header=false if the first row is data"
            )
        seen[name] = j
    return names


def _label_position(
    label_column: str | int | None, names: list[str] | None, n_columns: int
) -> int:
    if label_column is None:
        return n_columns - 1
    if isinstance(label_column, int):
        if not -n_columns <= label_column < n_columns:
            raise DataError(
                f"data.label_column: position {label_column} is out of range; the file has "
                f"{n_columns} columns (positions 0..{n_columns - 1})"
            )
        return label_column % n_columns
    if names is None:
        raise DataError(
            f"data.label_column: {label_column!r} names a column but the file has no header "
            f"row; set data.label_column to a position (0..{n_columns - 1}) or data.header=true"
        )
    if label_column.strip() not in names:
        shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
        raise DataError(
            f"data.label_column: column {label_column!r} not found; available columns: {shown}"
        )
    return names.index(label_column.strip())


def _parse_feature(values: Sequence[str], name: str, lines: list[int], header: bool) -> np.ndarray:
    """Floats of one feature column (missing -> nan); DataError on any non-numeric value."""
    if _ALL_NUMBERS.fullmatch("\x00".join(values)):
        return np.array(values, dtype=np.float64)  # fast path: every field is a number
    out = np.empty(len(values), dtype=np.float64)
    bad: list[int] = []
    for i, field in enumerate(values):
        if _is_number(field):
            out[i] = float(field)
        elif _is_missing(field):
            out[i] = np.nan
        else:
            bad.append(i)
    if bad:
        i = bad[0]
        hint = " or set data.header=true if that line is a header," if i == 0 and not header else ""
        raise DataError(
            f"data.path: column {name!r} has non-numeric value {values[i]!r} at line {lines[i]} "
            f"({_plural(len(bad), 'such value')} in that column); features must be numbers: "
            f"fix the file,{hint} or set data.label_column if this is the label column"
        )
    return out


def _label_bad_mask(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Masks (missing, infinite) of the label column."""
    missing = np.array([_is_missing(s) for s in labels], dtype=bool)
    infinite = np.array(
        [_is_number(s) and not np.isfinite(float(s)) for s in labels], dtype=bool
    )
    return missing, infinite


def _describe_bad(
    columns: dict[str, tuple[int, int]], bad_lines: list[int], n_rows: int
) -> str:
    parts = []
    for name, (n_missing, n_inf) in columns.items():
        counts = [f"{n_missing} missing"] * bool(n_missing) + [f"{n_inf} infinite"] * bool(n_inf)
        parts.append(f"column {name!r} ({', '.join(counts)})")
    return (
        f"missing or infinite values in {len(bad_lines)} of {_plural(n_rows, 'row')}: "
        f"{'; '.join(parts)}; first at line {bad_lines[0]}"
    )


def _drop_bad_rows(
    features: np.ndarray, labels: list[str], names: list[str], label_name: str,
    lines: list[int], drop_na: bool,
) -> tuple[np.ndarray, list[str]]:
    """Drop (drop_na) or reject rows with missing/infinite values. features: (n, d)."""
    feat_missing = np.isnan(features)
    feat_inf = np.isinf(features)
    lab_missing, lab_inf = _label_bad_mask(labels)
    bad = feat_missing.any(axis=1) | feat_inf.any(axis=1) | lab_missing | lab_inf
    if not bad.any():
        return features, labels
    columns = {
        name: (int(feat_missing[:, j].sum()), int(feat_inf[:, j].sum()))
        for j, name in enumerate(names)
        if feat_missing[:, j].any() or feat_inf[:, j].any()
    }
    if lab_missing.any() or lab_inf.any():
        columns[label_name] = (int(lab_missing.sum()), int(lab_inf.sum()))
    bad_lines = [lines[i] for i in np.flatnonzero(bad)]
    summary = _describe_bad(columns, bad_lines, len(labels))
    if not drop_na:
        raise DataError(f"data.path: {summary}; set data.drop_na=true to drop those rows, "
                        "or fix the file")
    if bad.all():
        raise DataError(f"data.drop_na: every row would be dropped ({summary}); fix the file")
    n_rows = _plural(len(labels), "row")
    message = f"data.drop_na=true dropped {len(bad_lines)} of {n_rows} ({summary})"
    warnings.warn(DroppedRowsWarning(message, len(bad_lines), tuple(bad_lines)), stacklevel=3)
    keep = np.flatnonzero(~bad)
    return features[keep], [labels[i] for i in keep]


def _class_key(value: str) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then text in string order (a total order)."""
    return (0, float(value), value) if _is_number(value) else (1, 0.0, value)


def _encode_labels(labels: list[str], name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices (n,) and class names; DataError for continuous or single-class labels."""
    numeric = all(_is_number(s) for s in labels)
    values = [float(s) for s in labels] if numeric else None
    if values is not None:
        fractional = [v for v in values if v != round(v)]
        if fractional:
            _raise_continuous(name, len(set(values)), repr(fractional[0]), numeric)
        labels = [str(int(v)) for v in values]
    distinct = sorted(set(labels), key=_class_key)
    n = len(labels)
    if len(distinct) > MAX_CLASSES or (n > 20 and len(distinct) > n / 2):
        example = distinct[len(distinct) // 2]
        _raise_continuous(name, len(distinct), example if numeric else repr(example), numeric)
    if len(distinct) < 2:
        raise DataError(
            f"labels in column {name!r} have a single class ({distinct[0]!r}) in "
            f"{_plural(n, 'row')}; a classifier needs at least 2: check data.label_column"
        )
    index = {c: i for i, c in enumerate(distinct)}
    return np.array([index[s] for s in labels], dtype=np.int64), tuple(distinct)


def _raise_continuous(name: str, n_distinct: int, example: str, numeric: bool) -> NoReturn:
    looks = "look continuous" if numeric else "look like identifiers, not classes"
    raise DataError(
        f"labels in column {name!r} {looks} ({n_distinct} distinct values, e.g. "
        f"{example}); this pipeline classifies: point data.label_column at a column of class "
        f"labels (integers or names, at most {MAX_CLASSES} classes) or bin the values first"
    )


def load_csv(
    path: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    header: str | bool = "auto",
    delimiter: str | None = None,
    drop_na: bool = False,
) -> Dataset:
    """Load a CSV of numeric features and one label column (rules: module docstring).

    Returns a Dataset with X: (n_rows, n_columns - 1) and y: (n_rows,) class indices.
    Raises DataError, with one line naming the problem and the fix, for any bad input.
    """
    delimiter = _check_options(label_column, header, delimiter, drop_na)
    text = _read_text(path)
    shown = repr(str(path))
    delimiter = delimiter or _detect_delimiter(text, shown)
    rows, lines = _parse_rows(text, delimiter, shown)
    _check_row_lengths(rows, lines, delimiter)
    has_header = _looks_like_header(rows) if header == "auto" else bool(header)
    names = _header_names(rows[0]) if has_header else None
    body, body_lines = (rows[1:], lines[1:]) if has_header else (rows, lines)
    if not body:
        raise DataError(
            f"data.path: {shown} has a header (line {lines[0]}) but no data rows; add rows, "
            "or set data.header=false if that line is data"
        )
    n_columns = len(rows[0])
    if n_columns < 2:
        raise DataError(
            f"data.path: {shown} has a single column, so no features; it needs feature "
            f"columns and a label column (check data.delimiter: {delimiter!r} was used)"
        )
    label_at = _label_position(label_column, names, n_columns)
    feature_at = [j for j in range(n_columns) if j != label_at]
    if names is None:
        feature_names, label_name = [f"x{i}" for i in range(len(feature_at))], "label"
    else:
        feature_names, label_name = [names[j] for j in feature_at], names[label_at]
    columns = list(zip(*body, strict=True))
    features = np.column_stack(
        [
            _parse_feature(columns[j], name, body_lines, has_header)
            for j, name in zip(feature_at, feature_names, strict=True)
        ]
    )
    features, labels = _drop_bad_rows(
        features, list(columns[label_at]), feature_names, label_name, body_lines, drop_na
    )
    y, classes = _encode_labels(labels, label_name)
    return Dataset(
        X=features,
        y=y,
        feature_names=tuple(feature_names),
        label_name=label_name,
        classes=classes,
    )
