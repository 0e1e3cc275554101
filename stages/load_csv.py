"""Read a classification CSV into a Dataset, telling the user exactly what is wrong with it.

Rules (each decision can be overridden by config):

* File: ``data.path`` must be a regular file; a directory, a named pipe (FIFO), a device or
  a socket is refused by ``os.stat`` before anything opens it (a FIFO would block), and an
  unreadable file says so.
* Text: the file must be UTF-8 (a BOM is fine) without NUL bytes. Blank lines are skipped
  (they are not rows); every other line is a row and is never dropped silently.
* Delimiter (``data.delimiter``, default: detect): each of ``, ; TAB |`` splits the first
  1000 rows; a candidate's score is the share of rows that have its most common field count
  (0 when that count is 1). The best-scoring candidate wins; a tie (e.g. ``1,5;2,3`` rows,
  which both ``,`` and ``;`` split evenly) is ambiguous and raises. No candidate at all
  means a single column, which raises as "no features". With ``data.decimal=','`` the comma
  is a decimal mark, so only ``; TAB |`` are candidates.
* Decimal mark (``data.decimal``, default ``.``): ``,`` reads ``1,5`` as 1.5 (European
  exports, usually ``;``-delimited); a ``.`` in a number is then an error (it would be a
  thousands separator). With the default, a feature holding decimal commas raises with the fix.
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

How the file is read, in bounded memory (about 2x the file's size at the peak for a numeric
CSV, the returned Dataset's copy included): one pass over the bytes checks NUL bytes and
UTF-8, counts line breaks (an upper bound on the rows, so the feature matrix is allocated
once) and keeps the first rows for the delimiter and header decisions. Then pyarrow's
streaming CSV reader parses the file block by block into text columns, and each block is
converted and written into the matrix before the next is read; a row's line number is only
looked up (by Python's ``csv`` module, whose tokenising pyarrow's matches) when a message or
warning needs it. Where pyarrow stops (ragged rows, quoting it rejects, a single column, a
multi-byte delimiter), Python's ``csv`` module reads the same file the same streaming way and
reports the exact line.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
import warnings
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from stages.dataset import DataError, Dataset

MAX_CLASSES = 50
_CANDIDATES = (",", ";", "\t", "|")
_SAMPLE_ROWS = 1000
_MISSING = frozenset(
    {"", "na", "n/a", "nan", "-nan", "+nan", "null", "none", "<na>", "#n/a", "#na", "?"}
)
# one grammar for Python's re and pyarrow's RE2: ASCII digits only, {d} the decimal mark
_NUMBER_TEMPLATE = r"[+-]?(?:(?:[0-9]+{d}?[0-9]*|{d}[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)"
_NUMBER_PATTERNS = {d: _NUMBER_TEMPLATE.format(d=re.escape(d)) for d in ".,"}
_NUMBERS = {d: re.compile(p, re.IGNORECASE | re.ASCII) for d, p in _NUMBER_PATTERNS.items()}
_READ_BLOCK = 1 << 20  # bytes per read of the checking pass and per pyarrow block
_PYTHON_BATCH = 50_000  # rows per batch when Python's csv module reads the file
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory", "point data.path at a CSV file inside it"),
    (stat.S_ISFIFO, "a named pipe (FIFO)",
     "save what it streams to a file and point data.path at that file"),
    (stat.S_ISCHR, "a character device", "point data.path at a CSV file"),
    (stat.S_ISBLK, "a block device", "point data.path at a CSV file"),
    (stat.S_ISSOCK, "a socket", "point data.path at a CSV file"),
)


class DroppedRowsWarning(UserWarning):
    """Rows dropped by ``data.drop_na=true``: ``n_dropped`` and their 1-based ``lines``."""

    def __init__(self, message: str, n_dropped: int, lines: tuple[int, ...]) -> None:
        super().__init__(message)
        self.n_dropped = n_dropped
        self.lines = lines


class _ArrowGaveUp(Exception):
    """pyarrow cannot read the file as Python's csv module would; read it with the latter."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _is_missing(field: str) -> bool:
    return field.lower() in _MISSING


def _is_number(field: str, decimal: str = ".") -> bool:
    return _NUMBERS[decimal].fullmatch(field) is not None


def _is_blank_row(row: Sequence[str]) -> bool:
    """Python csv's blank line: no field, or a single field of whitespace."""
    return not row or (len(row) == 1 and not row[0].strip())


# ---------------------------------------------------------------- options and the file


def check_csv_path(path: str | os.PathLike[str]) -> None:
    """DataError, in one line, unless ``path`` is a regular file this process can read.

    ``os.stat`` decides before anything opens the path, so a named pipe never blocks.
    """
    p = Path(path)
    shown = repr(str(p))
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError as err:
        if p.is_symlink():
            raise DataError(
                f"data.path: {shown} is a symbolic link to {os.readlink(p)!r}, which does not "
                "exist; point data.path at a CSV file"
            ) from err
        raise DataError(f"data.path: {shown} does not exist; point data.path at a CSV file"
                        ) from err
    except PermissionError as err:
        raise DataError(
            f"data.path: cannot read {shown} (permission denied on a folder above it); "
            "fix the permissions or point data.path at a readable copy"
        ) from err
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise DataError(
            f"data.path: cannot read {shown} ({reason}); point data.path at a readable file"
        ) from err
    for is_kind, kind, fix in _FILE_KINDS:
        if is_kind(mode):
            raise DataError(f"data.path: {shown} is {kind}, not a file; {fix}")
    if not stat.S_ISREG(mode):
        raise DataError(f"data.path: {shown} is not a regular file; point data.path at a "
                        "CSV file")
    try:
        with open(p, "rb"):
            pass
    except PermissionError as err:
        raise DataError(
            f"data.path: cannot read {shown} (permission denied); make it readable "
            "(e.g. chmod u+r) or point data.path at a readable copy"
        ) from err
    except OSError as err:
        raise DataError(
            f"data.path: cannot read {shown} ({err.strerror or err}); point data.path at a "
            "readable file"
        ) from err


@dataclass(frozen=True)
class _FileScan:
    """What the checking pass learned: the first rows' text, an upper bound on rows (0 for
    a scan of the head alone), and whether it read the whole file."""

    head: str
    max_rows: int
    complete: bool = True


def _scan_file(path: str | os.PathLike[str], shown: str, *, head_only: bool = False
               ) -> _FileScan:
    """One pass over the bytes: NUL, UTF-8, blank, line breaks, the first ~1000 rows.

    Memory: one read block plus the first rows' text. A NUL byte anywhere wins over an
    undecodable byte, which wins over an empty file (as when the whole file was decoded).
    ``head_only``: stop once the first rows are read (or a byte is undecodable); the checks
    then cover what was read.
    """
    check_csv_path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    head: list[str] = []
    head_lines = 0
    head_done = False
    blank = True
    breaks = 0
    offset = 0  # file offset of the block being read
    undecodable: tuple[int, int] | None = None  # (offset, byte)
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_READ_BLOCK)
            start = offset
            offset += len(block)
            if start == 0 and block.startswith(codecs.BOM_UTF8):
                block, start = block[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
            nul = block.find(b"\x00")
            if nul >= 0:
                raise DataError(
                    f"data.path: {shown} is not a text CSV (NUL byte at offset {start + nul}: "
                    "binary or UTF-16?); point data.path at a UTF-8 CSV file"
                )
            breaks += block.count(b"\n") + block.count(b"\r")
            if undecodable is None:
                pending = decoder.getstate()[0]
                try:
                    text = decoder.decode(block, final=not block)
                except UnicodeDecodeError as err:
                    data = pending + block
                    undecodable = (start - len(pending) + err.start, data[err.start])
                    text = ""
                if blank and text and not text.isspace():
                    blank = False
                if not head_done and text:
                    head.append(text)
                    head_lines += sum(1 for line in text.splitlines() if line.strip())
                    head_done = head_lines > _SAMPLE_ROWS + 1
            if not block:
                break
            if head_only and undecodable is not None:
                _undecodable(shown, *undecodable)
            if head_only and head_done:
                return _FileScan(head=_whole_rows("".join(head)), max_rows=0, complete=False)
    if undecodable is not None:
        _undecodable(shown, *undecodable)
    if blank:
        raise DataError(f"data.path: {shown} is empty; point data.path at a CSV with rows")
    text = "".join(head)
    return _FileScan(head=_whole_rows(text) if head_done else text, max_rows=breaks + 1)


def _whole_rows(text: str) -> str:
    """``text`` up to its last line break: a row the read cut short is left out."""
    return text[: max(text.rfind("\n"), text.rfind("\r")) + 1]


def _undecodable(shown: str, at: int, byte: int) -> NoReturn:
    raise DataError(
        f"data.path: {shown} is not UTF-8 text (byte 0x{byte:02x} at offset {at} cannot "
        "be decoded); save it as UTF-8 CSV"
    )


# ---------------------------------------------------------------- delimiter


def _field_counts(text: str, delimiter: str) -> list[int]:
    """Field counts of the first non-blank rows when split by ``delimiter``."""
    counts: list[int] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if not _is_blank_row(row):
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


def _decimal_comma_example(text: str, delimiter: str) -> str | None:
    """A field of the sample that is a number with a decimal comma when split by
    ``delimiter`` (e.g. '1,5'), or None."""
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            for value in row:
                value = value.strip()
                if "," in value and _is_number(value, ","):
                    return value
    except csv.Error:
        pass
    return None


def _detect_delimiter(text: str, shown: str, decimal: str) -> str:
    candidates = tuple(c for c in _CANDIDATES if c != decimal)
    counts = {c: _field_counts(text, c) for c in candidates}
    present = [c for c in candidates if counts[c] and max(counts[c]) > 1]
    if not present:
        return ","
    if len(present) == 1:
        return present[0]
    ranked = sorted(present, key=lambda c: _score(counts[c]), reverse=True)
    if _score(counts[ranked[0]]) > _score(counts[ranked[1]]):
        return ranked[0]
    tied = [c for c in ranked if _score(counts[c]) == _score(counts[ranked[0]])]
    hint = ""
    if "," in tied:
        for other in (c for c in tied if c != ","):
            example = _decimal_comma_example(text, other)
            if example is not None:
                hint = (f", or data.decimal=comma if {example!r} is a number with a decimal "
                        f"comma ({other!r} is then detected)")
                break
    raise DataError(
        f"data.delimiter: cannot tell the delimiter of {shown} "
        f"({' and '.join(repr(c) for c in tied)} split its rows equally well); "
        f"set data.delimiter to the right one{hint}"
    )


# ---------------------------------------------------------------- reading: text columns


def _first_row(text: str, delimiter: str) -> list[str] | None:
    """The first non-blank row of the sample, as Python's csv module reads it."""
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if not _is_blank_row(row):
                return row
    except csv.Error:
        pass
    return None


def _arrow_batches(
    path: str | os.PathLike[str], delimiter: str, n_columns: int
) -> Iterator[list[pa.Array]]:
    """Text columns block by block, by pyarrow's streaming reader (rows as Python's csv
    module splits them; whitespace-only lines skipped). Raises _ArrowGaveUp where pyarrow
    fails (a ragged row, quoting it rejects): the caller starts again with Python's csv."""

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        try:
            fields = next(csv.reader(io.StringIO(row.text or "", newline=""),
                                     delimiter=delimiter), [])
        except csv.Error:
            return "error"
        return "skip" if _is_blank_row(fields) else "error"

    names = [f"c{j}" for j in range(n_columns)]
    try:
        source = pa.OSFile(os.fspath(path))  # a plain file: no guessing of compression
    except (pa.ArrowException, OSError) as err:
        raise _ArrowGaveUp(str(err)) from err
    reader: pacsv.CSVStreamingReader | None = None
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=names, block_size=_READ_BLOCK),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"', double_quote=True, escape_char=False,
                newlines_in_values=True, ignore_empty_lines=True,
                invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names}, check_utf8=False,
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield batch.columns
            del batch
            pa.default_memory_pool().release_unused()  # keeps RSS near what is in use
    except (pa.ArrowException, ValueError) as err:
        raise _ArrowGaveUp(str(err)) from err
    finally:
        # Closed now, not when the interpreter tears Arrow down: a reader's read-ahead
        # thread still alive then aborts the process ("terminate called without an active
        # exception", apache/arrow#34314) after its work is done.
        if reader is not None:
            reader.close()
        source.close()


def _python_batches(
    path: str | os.PathLike[str], delimiter: str, shown: str, lines: array
) -> Iterator[list[pa.Array]]:
    """Text columns in batches of rows, by Python's csv module; appends each row's first
    line to ``lines``. Raises the parse error or the ragged-rows error, with line numbers,
    once the whole file has been read."""
    rows: list[list[str]] = []
    expected = 0
    ragged: tuple[int, int] | None = None  # (line, fields) of the first ragged row
    n_ragged = 0
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        previous = 0
        try:
            for row in reader:
                if not _is_blank_row(row):
                    if not expected:
                        expected = len(row)
                    if len(row) != expected:
                        n_ragged += 1
                        ragged = ragged or (previous + 1, len(row))
                    elif not n_ragged:
                        rows.append(row)
                        lines.append(previous + 1)
                        if len(rows) >= _PYTHON_BATCH:
                            yield _text_columns(rows, expected)
                            rows = []
                previous = reader.line_num
        except csv.Error as err:
            raise DataError(
                f"data.path: cannot parse line {reader.line_num} of {shown} ({err}); "
                "fix the quoting on that line or check data.delimiter"
            ) from err
    if ragged is not None:
        line, fields = ragged
        side = "too many" if fields > expected else "too few"
        raise DataError(
            f"data.path: line {line} has {fields} fields but line {lines[0]} has "
            f"{expected} ({side}; {_plural(n_ragged, 'such row')} in all); fix those rows, "
            f"or set data.delimiter if {delimiter!r} is not the separator"
        )
    if not expected:
        raise DataError(f"data.path: {shown} has no rows, only blank fields; point data.path "
                        "at a CSV with rows")
    if rows:
        yield _text_columns(rows, expected)


def _text_columns(rows: list[list[str]], n_columns: int) -> list[pa.Array]:
    return [pa.array([row[j] for row in rows], type=pa.string()) for j in range(n_columns)]


class _RowLines:
    """The 1-based line each row starts on, looked up only when a message needs it.

    ``known``: lines already recorded by Python's csv module (the fallback reader); else
    the file is read again, as far as the highest row asked for.
    """

    def __init__(self, path: str | os.PathLike[str], delimiter: str, shown: str,
                 known: array | None = None) -> None:
        self.path, self.delimiter, self.shown = path, delimiter, shown
        self.known = known if known is not None else array("q")
        self.complete = known is not None

    def of(self, rows: Sequence[int] | np.ndarray) -> list[int]:
        rows = [int(r) for r in rows]
        if rows and max(rows) >= len(self.known) and not self.complete:
            self._scan(max(rows))
        return [self.known[r] for r in rows]

    def _scan(self, upto: int) -> None:
        found = array("q")
        with open(self.path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=self.delimiter)
            previous = 0
            try:
                for row in reader:
                    if not _is_blank_row(row):
                        found.append(previous + 1)
                        if len(found) > upto:
                            break
                    previous = reader.line_num
            except csv.Error as err:
                raise DataError(
                    f"data.path: cannot parse line {reader.line_num} of {self.shown} ({err}); "
                    "fix the quoting on that line or check data.delimiter"
                ) from err
        self.known = found


# ---------------------------------------------------------------- reading: numbers


_NO_ROWS = np.empty(0, dtype=np.int64)


def _floats(strings: pa.Array, decimal: str) -> tuple[np.ndarray, np.ndarray, pa.Array | None]:
    """(values, positions of non-numeric values, the stripped texts or None) of one block of
    a feature column: numbers as float64, missing-value tokens as nan.

    Fast path: pyarrow's cast, whose accepted texts are numbers of our grammar or nan forms
    (nan results go through the exact path, which rejects e.g. "nan(1)").
    """
    fast: pa.Array | None = strings
    if decimal == ",":
        fast = None if pc.any(pc.match_substring(strings, ".")).as_py() else \
            pc.replace_substring(strings, ",", ".")
    if fast is not None:
        try:
            values = pc.cast(fast, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = None
        if values is not None and not np.isnan(values).any():
            return values, _NO_ROWS, None
    return _floats_exact(strings, decimal)


def _floats_exact(
    strings: pa.Array, decimal: str
) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """_floats by the rules: strip, then a number of the grammar, a missing token, or bad."""
    stripped = pc.utf8_trim_whitespace(strings)
    is_number = pc.match_substring_regex(stripped, f"^(?:{_NUMBER_PATTERNS[decimal]})$",
                                         ignore_case=True)
    is_missing = pc.is_in(pc.utf8_lower(stripped), value_set=pa.array(sorted(_MISSING)))
    good = pc.or_(is_number, is_missing).to_numpy(zero_copy_only=False)
    numbers = pc.if_else(is_number, stripped, pa.scalar(None, pa.string()))
    if decimal == ",":
        numbers = pc.replace_substring(numbers, ",", ".")
    try:
        values = pc.fill_null(pc.cast(numbers, pa.float64()), np.nan)
        out = values.to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # e.g. an exponent pyarrow cannot parse: Python's float can
        out = np.array([np.nan if s is None else float(s) for s in numbers.to_pylist()])
    return out, np.flatnonzero(~good), stripped


@dataclass
class _BadValues:
    """Non-numeric values of one feature column: count, first row and its text."""

    count: int = 0
    row: int = -1
    value: str = ""

    def add(self, rows: np.ndarray, first_value: str) -> None:
        """``rows``: (k,) file rows of k non-numeric values, the first holding ``first_value``."""
        if self.count == 0:
            self.row, self.value = int(rows[0]), first_value
        self.count += len(rows)


@dataclass
class _Columns:
    """Accumulates the blocks of a file: features into one preallocated float64 matrix,
    labels as codes into a table of distinct texts, and what the header rule needs.

    Row 0 (header or data) is kept aside as ``first`` and decided at the end.
    """

    first: list[str]  # row 0, stripped
    n_columns: int
    feature_at: list[int]
    label_at: int | None  # None: the label position is an error, only count rows
    decimal: str
    capacity: int
    header_columns: list[int]  # text columns of row 0 to look for below (header rule c)
    n_rows: int = 0
    X: np.ndarray = field(init=False)
    codes: np.ndarray = field(init=False)
    label_texts: dict[str, int] = field(default_factory=dict)
    bad: list[_BadValues] = field(init=False)
    repeated: set[int] = field(default_factory=set)  # header_columns whose name reappears

    def __post_init__(self) -> None:
        self.bad = [_BadValues() for _ in self.feature_at]
        width = len(self.feature_at) if self.label_at is not None else 0
        capacity = self.capacity if self.label_at is not None else 0
        self.X = np.empty((capacity, width), dtype=np.float64)
        self.codes = np.empty(capacity, dtype=np.int64)

    def add(self, columns: list[pa.Array]) -> None:
        """One block of text columns: rows n_rows .. n_rows + len - 1 of the file."""
        start, skip = self.n_rows, int(self.n_rows == 0)
        size = len(columns[0]) - skip
        self.n_rows += size + skip
        if size <= 0:
            return
        if skip:
            columns = [column.slice(1) for column in columns]
        self._look_for_names(columns)
        if self.label_at is None:
            return
        rows = slice(start + skip, start + skip + size)
        if rows.stop > len(self.codes):
            self._grow(rows.stop)
        for k, j in enumerate(self.feature_at):
            values, bad, stripped = _floats(columns[j], self.decimal)
            self.X[rows, k] = values
            if bad.size and stripped is not None:
                self.bad[k].add(bad + rows.start, stripped[int(bad[0])].as_py())
        labels = pc.utf8_trim_whitespace(columns[self.label_at]).dictionary_encode()
        texts = labels.dictionary.to_pylist()
        table = np.array([self.label_texts.setdefault(t, len(self.label_texts)) for t in texts],
                         dtype=np.int64)
        self.codes[rows] = table[labels.indices.to_numpy(zero_copy_only=False)]

    def _look_for_names(self, columns: list[pa.Array]) -> None:
        for j in self.header_columns:
            if j in self.repeated:
                continue
            hits = pc.match_substring(columns[j], self.first[j])
            if pc.any(hits).as_py():
                found = pc.utf8_trim_whitespace(pc.filter(columns[j], hits))
                if pc.any(pc.equal(found, self.first[j])).as_py():
                    self.repeated.add(j)

    def _grow(self, rows: int) -> None:
        """Never needed when ``capacity`` counts line breaks; kept so a miscount is safe."""
        capacity = max(rows, 2 * len(self.codes))
        X = np.empty((capacity, self.X.shape[1]), dtype=np.float64)
        X[: len(self.X)] = self.X
        codes = np.empty(capacity, dtype=np.int64)
        codes[: len(self.codes)] = self.codes
        self.X, self.codes = X, codes

    def add_first_row_as_data(self) -> None:
        """Row 0 is data: parse it by the same rules into row 0 of the matrix."""
        if self.label_at is None:
            return
        for k, j in enumerate(self.feature_at):
            text = self.first[j]
            if _is_number(text, self.decimal):
                self.X[0, k] = float(text.replace(",", "."))
            elif _is_missing(text):
                self.X[0, k] = np.nan
            else:
                previous = self.bad[k]
                self.bad[k] = _BadValues(count=previous.count + 1, row=0, value=text)
        label = self.first[self.label_at]
        self.codes[0] = self.label_texts.setdefault(label, len(self.label_texts))


@dataclass(frozen=True)
class _Setup:
    """The options that decide, from row 0, which columns are features and the label."""

    label_column: str | int | None
    header: str | bool
    decimal: str


def _read_columns(
    path: str | os.PathLike[str], scan: _FileScan, delimiter: str, shown: str,
    setup: _Setup,
) -> tuple[_Columns, _RowLines]:
    """Every row of the file into a _Columns, by pyarrow or else by Python's csv module."""
    first = _first_row(scan.head, delimiter)
    if first is not None and len(first) > 1 and len(delimiter.encode("utf-8")) == 1:
        try:
            columns = _consume(_arrow_batches(path, delimiter, len(first)), scan, setup)
        except _ArrowGaveUp:
            columns = None
        if columns is not None:
            return columns, _RowLines(path, delimiter, shown)
    lines = array("q")
    columns = _consume(_python_batches(path, delimiter, shown, lines), scan, setup)
    if columns is None:  # _python_batches raises first; kept for the type checker
        raise DataError(f"data.path: {shown} has no rows; point data.path at a CSV with rows")
    return columns, _RowLines(path, delimiter, shown, known=lines)


def _consume(
    batches: Iterator[list[pa.Array]], scan: _FileScan, setup: _Setup
) -> _Columns | None:
    """Feed every block to a _Columns set up from row 0; None if there was no row."""
    columns: _Columns | None = None
    for block in batches:
        if columns is None:
            if not len(block[0]):
                continue
            columns = _start_columns([c[0].as_py().strip() for c in block], scan, setup)
        columns.add(block)
    return columns


def _start_columns(first: list[str], scan: _FileScan, setup: _Setup) -> _Columns:
    """The _Columns for a file whose row 0 is ``first``: the header is presumed where the
    rules allow it (confirmed at the end), which fixes the label's position."""
    n_columns = len(first)
    maybe_header = setup.header is True or (
        setup.header == "auto" and _could_be_header(first, setup.decimal))
    names = [f or f"x{j}" for j, f in enumerate(first)] if maybe_header else None
    try:
        label_at: int | None = _label_position(setup.label_column, names, n_columns)
    except DataError:
        label_at = None  # raised again at the end, after the errors that come first
    if n_columns < 2:
        label_at = None
    header_columns = [j for j, f in enumerate(first) if not _is_missing(f)] \
        if setup.header == "auto" and maybe_header else []
    feature_at = [j for j in range(n_columns) if j != label_at] if label_at is not None else []
    return _Columns(first=first, n_columns=n_columns, feature_at=feature_at, label_at=label_at,
                    decimal=setup.decimal, capacity=scan.max_rows,
                    header_columns=header_columns)


# ---------------------------------------------------------------- header and label column


def _could_be_header(first: list[str], decimal: str) -> bool:
    """Header rules (a) and (b): no field is a number, at least one is text."""
    if any(_is_number(f, decimal) for f in first):
        return False
    return any(not _is_missing(f) for f in first)


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


# ---------------------------------------------------------------- errors and labels


def _raise_header_only(shown: str, line: int) -> NoReturn:
    raise DataError(
        f"data.path: {shown} has a header (line {line}) but no data rows; "
        "add rows, or set data.header=false if that line is data"
    )


def _raise_single_column(shown: str, delimiter: str) -> NoReturn:
    raise DataError(
        f"data.path: {shown} has a single column, so no features; it needs feature "
        f"columns and a label column (check data.delimiter: {delimiter!r} was used)"
    )


def _raise_bad_feature(
    name: str, bad: _BadValues, line: int, decimal: str, first_is_data: bool,
    counted: str = "in that column",
) -> NoReturn:
    value = bad.value
    if decimal == "." and "," in value and _is_number(value, ","):
        raise DataError(
            f"data.path: column {name!r} holds decimal commas ({value!r} at line {line}); "
            "add data.decimal=comma"
        )
    if decimal == "," and "." in value and _is_number(value.replace(".", ""), ","):
        raise DataError(
            f"data.path: column {name!r} holds a '.' ({value!r} at line {line}) but "
            "data.decimal=',' reads ',' as the decimal mark; set data.decimal='.' if the "
            "file uses decimal points, or remove thousands separators from the file"
        )
    hint = " or set data.header=true if that line is a header," \
        if bad.row == 0 and first_is_data else ""
    raise DataError(
        f"data.path: column {name!r} has non-numeric value {value!r} at line {line} "
        f"({_plural(bad.count, 'such value')} {counted}); features must be numbers: "
        f"fix the file,{hint} or set data.label_column if this is the label column"
    )


def _describe_bad(
    columns: dict[str, tuple[int, int]], n_bad: int, first_line: int, n_rows: int
) -> str:
    parts = []
    for name, (n_missing, n_inf) in columns.items():
        counts = [f"{n_missing} missing"] * bool(n_missing) + [f"{n_inf} infinite"] * bool(n_inf)
        parts.append(f"column {name!r} ({', '.join(counts)})")
    return (
        f"missing or infinite values in {n_bad} of {_plural(n_rows, 'row')}: "
        f"{'; '.join(parts)}; first at line {first_line}"
    )


def _drop_bad_rows(
    features: np.ndarray, codes: np.ndarray, texts: list[str], names: list[str],
    label_name: str, rows_at: int, lines: _RowLines, drop_na: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop (drop_na) or reject rows with missing/infinite values. features: (n, d);
    codes: (n,) indices into ``texts``; row i is row ``rows_at + i`` of the file."""
    text_missing = np.array([_is_missing(t) for t in texts], dtype=bool)
    text_inf = np.array([_is_number(t) and not np.isfinite(float(t)) for t in texts],
                        dtype=bool)
    lab_missing, lab_inf = text_missing[codes], text_inf[codes]
    bad = ~np.isfinite(features).all(axis=1) | lab_missing | lab_inf
    if not bad.any():
        return features, codes
    columns = {}
    for j, name in enumerate(names):
        n_missing, n_inf = int(np.isnan(features[:, j]).sum()), int(np.isinf(features[:, j]).sum())
        if n_missing or n_inf:
            columns[name] = (n_missing, n_inf)
    if lab_missing.any() or lab_inf.any():
        columns[label_name] = (int(lab_missing.sum()), int(lab_inf.sum()))
    bad_rows = np.flatnonzero(bad)
    n_rows = len(codes)
    if not drop_na:
        summary = _describe_bad(columns, len(bad_rows), lines.of([rows_at + bad_rows[0]])[0],
                                n_rows)
        raise DataError(f"data.path: {summary}; set data.drop_na=true to drop those rows, "
                        "or fix the file")
    bad_lines = lines.of(rows_at + bad_rows)
    summary = _describe_bad(columns, len(bad_rows), bad_lines[0], n_rows)
    if bad.all():
        raise DataError(f"data.drop_na: every row would be dropped ({summary}); fix the file")
    message = f"data.drop_na=true dropped {len(bad_lines)} of {_plural(n_rows, 'row')} " \
              f"({summary})"
    warnings.warn(DroppedRowsWarning(message, len(bad_lines), tuple(bad_lines)), stacklevel=3)
    keep = np.flatnonzero(~bad)
    return features[keep], codes[keep]


def _class_key(value: str) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then text in string order (a total order)."""
    return (0, float(value), value) if _is_number(value) else (1, 0.0, value)


def _encode_labels(
    codes: np.ndarray, texts: list[str], name: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices (n,) and class names of label ``codes`` (n,) into ``texts``; DataError
    for continuous or single-class labels."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(texts)))
    numeric = all(_is_number(texts[c]) for c in used)
    classes_of = list(texts)
    if numeric:
        values = np.full(len(texts), np.nan)
        values[used] = [float(texts[c]) for c in used]
        fractional = np.zeros(len(texts), dtype=bool)
        fractional[used] = values[used] != np.round(values[used])
        if fractional.any():
            first = values[codes[np.argmax(fractional[codes])]]
            _raise_continuous(name, len(set(values[used].tolist())), repr(float(first)),
                              numeric)
        for c in used:
            classes_of[c] = str(int(values[c]))
    distinct = sorted({classes_of[c] for c in used}, key=_class_key)
    n = len(codes)
    if len(distinct) > MAX_CLASSES or (n > 20 and len(distinct) > n / 2):
        example = distinct[len(distinct) // 2]
        _raise_continuous(name, len(distinct), example if numeric else repr(example), numeric)
    if len(distinct) < 2:
        raise DataError(
            f"labels in column {name!r} have a single class ({distinct[0]!r}) in "
            f"{_plural(n, 'row')}; a classifier needs at least 2: check data.label_column"
        )
    index = {c: i for i, c in enumerate(distinct)}
    class_of_code = np.array([index.get(c, -1) for c in classes_of], dtype=np.int64)
    return class_of_code[codes], tuple(distinct)


def _raise_continuous(name: str, n_distinct: int, example: str, numeric: bool) -> NoReturn:
    looks = "look continuous" if numeric else "look like identifiers, not classes"
    raise DataError(
        f"labels in column {name!r} {looks} ({n_distinct} distinct values, e.g. "
        f"{example}); this pipeline classifies: point data.label_column at a column of class "
        f"labels (integers or names, at most {MAX_CLASSES} classes) or bin the values first"
    )


def _label_texts(texts: dict[str, int], codes: np.ndarray, decimal: str
                 ) -> tuple[list[str], np.ndarray]:
    """Label texts by code with decimal commas made points ('1,0' -> '1.0'), merging texts
    that become equal; returns (texts, codes)."""
    if decimal == ".":
        return list(texts), codes
    merged: dict[str, int] = {}
    remap = np.array([
        merged.setdefault(t.replace(",", ".") if _is_number(t, ",") else t, len(merged))
        for t in texts
    ], dtype=np.int64)
    return list(merged), remap[codes]


# ---------------------------------------------------------------- the stage


def load_csv(
    path: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    header: Literal["auto"] | bool = "auto",
    delimiter: str | None = None,
    drop_na: bool = False,
    decimal: str = ".",
) -> Dataset:
    """Load a CSV of numeric features and one label column (rules: module docstring).

    The options arrive checked (``pipeline.config.schema.CSVDataConfig``): ``header`` "auto",
    True or False; ``delimiter`` one character or None to detect; ``decimal`` "." or ",".
    Returns a Dataset with X: (n_rows, n_columns - 1) and y: (n_rows,) class indices.
    Raises DataError, with one line naming the problem and the fix, for any bad file.
    """
    shown = repr(str(path))
    scan = _scan_file(path, shown)
    delimiter = delimiter or _detect_delimiter(scan.head, shown, decimal)
    setup = _Setup(label_column=label_column, header=header, decimal=decimal)
    columns, lines = _read_columns(path, scan, delimiter, shown, setup)
    first = columns.first
    if header == "auto":
        has_header = _could_be_header(first, decimal) and not columns.repeated
    else:
        has_header = bool(header)
    names = _header_names(first) if has_header else None
    if has_header and columns.n_rows == 1:
        _raise_header_only(shown, lines.of([0])[0])
    n_columns = columns.n_columns
    if n_columns < 2:
        _raise_single_column(shown, delimiter)
    label_at = _label_position(label_column, names, n_columns)
    if label_at != columns.label_at:  # cannot happen: the label was placed from row 0
        raise AssertionError(f"label column {label_at} != {columns.label_at}")
    if names is None:
        feature_names = [f"x{i}" for i in range(len(columns.feature_at))]
        label_name = "label"
    else:
        feature_names = [names[j] for j in columns.feature_at]
        label_name = names[label_at]
    if not has_header:
        columns.add_first_row_as_data()
    for name, bad in zip(feature_names, columns.bad, strict=True):
        if bad.count:
            line = lines.of([bad.row])[0]
            _raise_bad_feature(name, bad, line, decimal, not has_header)
    rows_at = int(has_header)
    features = columns.X[rows_at: columns.n_rows]
    texts, codes = _label_texts(columns.label_texts, columns.codes[rows_at: columns.n_rows],
                                decimal)
    del columns
    features, codes = _drop_bad_rows(features, codes, texts, feature_names, label_name,
                                     rows_at, lines, drop_na)
    y, classes = _encode_labels(codes, texts, label_name)
    return Dataset(
        X=features,
        y=y,
        feature_names=tuple(feature_names),
        label_name=label_name,
        classes=classes,
    )



# ---------------------------------------------------------------- before any work


def precheck_csv(
    path: str | os.PathLike[str],
    *,
    label_column: str | int | None = None,
    header: Literal["auto"] | bool = "auto",
    delimiter: str | None = None,
    decimal: str = ".",
) -> None:
    """Refuse, from the file's first rows alone, what :func:`load_csv` would refuse: the
    path, the text, the delimiter, the header and the label column, and a feature value
    that is not a number (decimal commas included). Cheap (the ~1000 rows load_csv decides
    the delimiter and header from), so a caller runs it before starting any work.

    The same rules and messages as load_csv, checked in its order; what needs every row
    (ragged rows, missing values, the classes) is left to load_csv, which checks it all
    again. Raises DataError; returning says only that the first rows hold no problem.
    """
    shown = repr(str(path))
    scan = _scan_file(path, shown, head_only=True)
    delimiter = delimiter or _detect_delimiter(scan.head, shown, decimal)
    rows = _sample_rows(scan.head, delimiter)
    if not rows:  # blank fields only, a parse error or a ragged row: load_csv's to report
        return
    first = [f.strip() for f in rows[0][1]]
    n_columns = len(first)
    if header == "auto":
        could_be = _could_be_header(first, decimal)
        repeated = could_be and any(
            row[j].strip() == first[j] for _, row in rows[1:] for j in range(n_columns)
            if not _is_missing(first[j]))
        has_header = could_be and not repeated
        # A header the rows below refute (rule c) may be refuted past the first rows.
        certain = not has_header or scan.complete
    else:
        has_header, certain = bool(header), True
    names = None
    if has_header:
        names = _header_names(first) if certain else [f or f"x{j}" for j, f in enumerate(first)]
        if certain and len(rows) == 1:
            _raise_header_only(shown, rows[0][0])
    if n_columns < 2:
        _raise_single_column(shown, delimiter)
    label_at = _label_position(label_column, names, n_columns)
    data = rows[1:] if has_header else rows
    counted = "in that column" if scan.complete else f"in its first {len(data)} rows"
    for j in (j for j in range(n_columns) if j != label_at):
        bad = [(line, row[j].strip()) for line, row in data
               if not _is_number(row[j].strip(), decimal) and not _is_missing(row[j].strip())]
        if bad:
            line, value = bad[0]
            name = names[j] if names is not None else f"x{j - (j > label_at)}"
            found = _BadValues(count=len(bad), row=0 if line == rows[0][0] else 1, value=value)
            _raise_bad_feature(name, found, line, decimal, not has_header, counted)


def _sample_rows(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The first non-blank rows of the sample (a header and 1000 rows) with the line each
    starts on, as load_csv's readers split them; [] if a row has another field count than
    the first or cannot be parsed."""
    rows: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous = 0
    try:
        for row in reader:
            if not _is_blank_row(row):
                if rows and len(row) != len(rows[0][1]):
                    return []
                rows.append((previous + 1, row))
                if len(rows) > _SAMPLE_ROWS:
                    break
            previous = reader.line_num
    except csv.Error:
        return []
    return rows
