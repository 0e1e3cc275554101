"""load_csv: RustNet's diabetes CSV, header/delimiter/label detection, one test per error,
decimal commas, what data.path may point at, large files against pandas."""

import contextlib
import csv
import io
import os
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stages.load_csv as load_csv_module
from pipeline.config.schema import validate
from pipeline.errors import ConfigError
from stages.dataset import DataError, Dataset
from stages.load_csv import DroppedRowsWarning, check_csv_path, load_csv

DIABETES = Path(__file__).resolve().parents[1] / "data" / "rustnet_diabetes.csv"


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def load_text(tmp_path: Path, text: str | bytes, **kwargs: object) -> Dataset:
    return load_csv(write(tmp_path, text), **kwargs)


def error_of(tmp_path: Path, text: str | bytes, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        load_text(tmp_path, text, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- happy paths


def test_rustnet_diabetes_keeps_all_768_rows() -> None:
    data = load_csv(DIABETES)
    assert data.X.shape == (768, 8)
    assert int(data.y.sum()) == 268
    assert data.classes == ("0", "1")
    assert data.feature_names == tuple(f"x{i}" for i in range(8))
    assert data.label_name == "label"
    # the first patient, which RustNet's pandas read took for a header
    assert data.X[0].tolist() == [6, 148, 72, 35, 0, 33.6, 0.627, 50]
    assert data.y[0] == 1


def test_header_with_named_label_in_the_middle(tmp_path: Path) -> None:
    text = "sepal, species ,petal\n1.5,b,2\n3,a,4\n5,b,6e0\n"
    data = load_text(tmp_path, text, label_column="species")
    assert data.feature_names == ("sepal", "petal")
    assert data.label_name == "species"
    assert data.X.tolist() == [[1.5, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert data.classes == ("a", "b")
    assert data.y.tolist() == [1, 0, 1]


def test_yes_no_labels_without_header(tmp_path: Path) -> None:
    data = load_text(tmp_path, "1,2,yes\n3,4,no\n5,6,yes\n")
    assert data.n_samples == 3
    assert data.classes == ("no", "yes")
    assert data.y.tolist() == [1, 0, 1]
    assert data.feature_names == ("x0", "x1") and data.label_name == "label"


def test_three_string_classes(tmp_path: Path) -> None:
    text = "a,b,species\n1,2,virginica\n3,4,setosa\n5,6,versicolor\n7,8,setosa\n"
    data = load_text(tmp_path, text)
    assert data.classes == ("setosa", "versicolor", "virginica")
    assert data.y.tolist() == [2, 0, 1, 0]


@pytest.mark.parametrize(
    ("labels", "classes", "y"),
    [
        (["0", "1", "1"], ("0", "1"), [0, 1, 1]),
        (["1.0", "0.0", "1"], ("0", "1"), [1, 0, 1]),
        (["2", "0", "1"], ("0", "1", "2"), [2, 0, 1]),
        (["10", "2", "10"], ("2", "10"), [1, 0, 1]),
        (["-1", "1", "-1"], ("-1", "1"), [0, 1, 0]),
    ],
)
def test_numeric_labels_sort_numerically(
    tmp_path: Path, labels: list[str], classes: tuple[str, ...], y: list[int]
) -> None:
    text = "".join(f"{i},{label}\n" for i, label in enumerate(labels))
    data = load_text(tmp_path, text)
    assert data.classes == classes
    assert data.y.tolist() == y


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_detected(tmp_path: Path, delimiter: str) -> None:
    rows = [["f,1" if delimiter != "," else "f1", "f2", "y"], ["1.5", "2", "0"], ["3", "4", "1"]]
    text = "\n".join(delimiter.join(row) for row in rows) + "\n"
    data = load_text(tmp_path, text)
    assert data.X.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert data.label_name == "y"


def test_explicit_delimiter(tmp_path: Path) -> None:
    assert load_text(tmp_path, "1\t2\t0\n3\t4\t1\n", delimiter="\t").n_features == 2
    assert load_text(tmp_path, "1;2;0\n3;4;1\n", delimiter=";").n_features == 2


def test_header_override(tmp_path: Path) -> None:
    text = "1,2,0\n3,4,1\n5,6,0\n"
    data = load_text(tmp_path, text, header=True)
    assert data.feature_names == ("1", "2") and data.label_name == "0"
    assert data.n_samples == 2
    assert load_text(tmp_path, text, header=False).n_samples == 3


def test_empty_header_name_gets_a_placeholder(tmp_path: Path) -> None:
    data = load_text(tmp_path, ",b,y\n1,2,0\n3,4,1\n")
    assert data.feature_names == ("x0", "b")


def test_label_column_by_position(tmp_path: Path) -> None:
    data = load_text(tmp_path, "0,1.5,2\n1,3,4\n", label_column=0)
    assert data.X.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert data.y.tolist() == [0, 1]
    assert load_text(tmp_path, "0,1.5,2\n1,3,4\n", label_column=-3).y.tolist() == [0, 1]


def test_bom_crlf_blank_lines_and_quotes(tmp_path: Path) -> None:
    text = '\ufeffa,b,y\r\n\r\n"1",2,"x,y"\r\n3,4,z\r\n\r\n'
    data = load_text(tmp_path, text)
    assert data.feature_names == ("a", "b")
    assert data.classes == ("x,y", "z")
    assert data.n_samples == 2


def test_drop_na_drops_and_reports(tmp_path: Path) -> None:
    text = "a,b,y\n1,2,0\n,2,1\n3,inf,1\n4,5,NA\n6,7,1\n8,9,0\n"
    with pytest.warns(DroppedRowsWarning) as record:
        data = load_text(tmp_path, text, drop_na=True)
    assert data.X.tolist() == [[1, 2], [6, 7], [8, 9]]
    assert data.y.tolist() == [0, 1, 0]
    warning = record[0].message
    assert isinstance(warning, DroppedRowsWarning)
    assert warning.n_dropped == 3 and warning.lines == (3, 4, 5)
    assert "dropped 3 of 6 rows" in str(warning)


def test_no_warning_without_bad_rows(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_text(tmp_path, "1,0\n2,1\n", drop_na=True)


# ---------------------------------------------------------------- one test per error


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.path: '.*nope\.csv' does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.path: .* is a directory"):
        load_csv(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    assert "is empty" in error_of(tmp_path, "")
    assert "is empty" in error_of(tmp_path, " \n\n  \n")


def test_only_blank_fields(tmp_path: Path) -> None:
    assert "no rows" in error_of(tmp_path, '"')


def test_header_without_rows(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b,label\n")
    assert "header" in message and "no data rows" in message and "data.header" in message


def test_row_with_too_few_fields(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1,2,0\n3,4,1\n\n5,6\n7,8,1\n")
    assert "line 4 has 2 fields but line 1 has 3" in message and "too few" in message


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b,y\n1,2,0\n3,4,1,9\n")
    assert "line 3 has 4 fields but line 1 has 3" in message and "too many" in message


def test_non_numeric_feature(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b,y\n1,2,0\n\n3,zz,1\n")
    assert "column 'b'" in message and "'zz'" in message and "line 4" in message


def test_only_ascii_numbers_are_numbers(tmp_path: Path) -> None:
    assert "'\u0663'" in error_of(tmp_path, "1,0\n\u0663,1\n")  # ARABIC-INDIC DIGIT THREE
    assert "'1_000'" in error_of(tmp_path, "1,0\n1_000,1\n")


def test_non_numeric_feature_is_not_dropped_by_drop_na(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b,y\n1,2,0\n3,zz,1\n", drop_na=True)
    assert "non-numeric" in message and "column 'b'" in message


def test_first_row_with_bad_value_is_data_not_header(tmp_path: Path) -> None:
    message = error_of(tmp_path, "abc,yes\n1,no\n2,yes\n")
    assert "'abc'" in message and "line 1" in message and "data.header=true" in message


def test_missing_and_infinite_values(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b,y\n1,,0\n2,-inf,1\n3,4,\n5,6,1\n")
    assert "column 'b' (1 missing, 1 infinite)" in message
    assert "column 'y' (1 missing)" in message
    assert "line 2" in message and "data.drop_na=true" in message


def test_drop_na_dropping_every_row(tmp_path: Path) -> None:
    assert "data.drop_na" in error_of(tmp_path, "a,b,y\n1,,0\nNA,2,1\n", drop_na=True)


def test_label_column_not_found(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b,y\n1,2,0\n3,4,1\n", label_column="target")
    assert "data.label_column" in message and "'target'" in message
    assert "'a', 'b', 'y'" in message


def test_label_column_name_without_header(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1,2,0\n3,4,1\n", label_column="y")
    assert "data.label_column" in message and "no header" in message


def test_label_column_position_out_of_range(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1,2,0\n3,4,1\n", label_column=3)
    assert "data.label_column" in message and "3 columns" in message


def test_binary_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "not a text CSV" in message and "NUL" in message


def test_utf16_file(tmp_path: Path) -> None:
    assert "not a text CSV" in error_of(tmp_path, "a,b\n1,0\n".encode("utf-16"))


def test_undecodable_utf8(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,b\n1,caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in message and "0xe9" in message


def test_single_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1\n0\n1\n")
    assert "single column" in message and "data.delimiter" in message


def test_continuous_float_labels(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1,0.37\n2,1\n3,0\n")
    assert "look continuous" in message and "0.37" in message and "data.label_column" in message


def test_too_many_distinct_labels(tmp_path: Path) -> None:
    text = "".join(f"{i},{i}\n" for i in range(60))
    assert "look continuous (60 distinct values" in error_of(tmp_path, text)


def test_identifier_like_string_labels(tmp_path: Path) -> None:
    text = "".join(f"{i},id{i}\n" for i in range(30))
    assert "look like identifiers" in error_of(tmp_path, text)


def test_single_class(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1,yes\n2,yes\n")
    assert "single class ('yes')" in message and "data.label_column" in message


def test_ambiguous_delimiter(tmp_path: Path) -> None:
    message = error_of(tmp_path, "1,5;2,3;1\n1,5;2,3;0\n")
    assert "data.delimiter" in message and "','" in message and "';'" in message


def test_duplicate_header_names(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a,a,y\n1,2,0\n3,4,1\n")
    assert "'a' twice" in message and "data.header" in message


# ---------------------------------------------------------------- properties

FIELDS = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "1.5", "1e3", "1e999", "inf", "-inf", "nan", "NA",
                     "", " ", "yes", "no", "a", '"', '"1,2"', "?", "x y", "0.0", "1.0"]),
    st.text(alphabet="01x.,;|\t\"' -e\r\n", max_size=4),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def check_valid(data: Dataset) -> None:
    assert data.X.ndim == 2 and data.X.shape[0] == data.y.shape[0] >= 2
    assert data.X.shape[1] == len(data.feature_names) >= 1
    assert np.all(np.isfinite(data.X))
    assert data.y.min() >= 0 and data.y.max() < data.n_classes
    assert data.n_classes >= 2 and len(np.unique(data.y)) == data.n_classes


def load_or_data_error(content: str | bytes, **kwargs: object) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedRowsWarning)
        path = write(Path(tmp), content)
        try:
            data = load_csv(path, **kwargs)
        except DataError as err:
            assert "\n" not in str(err)
            return
        check_valid(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=200))
def test_random_bytes_load_or_raise_data_error(content: bytes) -> None:
    load_or_data_error(content)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.lists(FIELDS, min_size=1, max_size=4), min_size=0, max_size=8),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    header=st.sampled_from(["auto", True, False]),
    drop_na=st.booleans(),
    label_column=st.sampled_from([None, 0, -1, 2, "a", "x0"]),
    give_delimiter=st.booleans(),
)
def test_random_rows_load_or_raise_data_error(
    rows: list[list[str]], delimiter: str, header: object, drop_na: bool,
    label_column: object, give_delimiter: bool,
) -> None:
    text = "\n".join(delimiter.join(row) for row in rows)
    load_or_data_error(
        text, header=header, drop_na=drop_na, label_column=label_column,
        delimiter=delimiter if give_delimiter else None,
    )


@settings(max_examples=100, deadline=None)
@given(
    X=st.lists(
        st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.sampled_from(["a", "b", "c"])),
        min_size=3, max_size=20,
    )
)
def test_written_numbers_are_read_back_exactly(X: list[tuple[float, float, str]]) -> None:
    if len({row[2] for row in X}) < 2:
        return
    text = "f,g,y\n" + "".join(f"{a!r},{b!r},{c}\n" for a, b, c in X)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_csv(write(Path(tmp), text))
    assert data.X.tolist() == [[a, b] for a, b, _ in X]
    assert [data.classes[i] for i in data.y] == [c for _, _, c in X]


# ---------------------------------------------------------------- decimal commas (data.decimal)


def test_decimal_comma_file_reads_with_decimal_comma(tmp_path: Path) -> None:
    text = "a;b;c;y\n-0,884;1,5;3;0\n2,25e1;-,5;1e-3;1\n0,0;7,;+4,75;1\n"
    data = load_text(tmp_path, text, decimal=",")
    assert data.feature_names == ("a", "b", "c")
    assert data.X.tolist() == [[-0.884, 1.5, 3.0], [22.5, -0.5, 0.001], [0.0, 7.0, 4.75]]
    assert data.y.tolist() == [0, 1, 1]


def test_decimal_comma_headerless_diabetes_matches_the_original(tmp_path: Path) -> None:
    # RustNet's diabetes CSV as a European export writes it: ';' between fields, ',' decimals
    european = DIABETES.read_text().replace(",", ";").replace(".", ",")
    data = load_text(tmp_path, european, decimal=",")
    assert data.digest() == load_csv(DIABETES).digest()
    # with the default, ',' and ';' split its rows equally well: the line names data.decimal
    message = error_of(tmp_path, european)
    assert "data.delimiter" in message and "data.decimal=comma" in message and "'33,6'" in message


def test_default_decimal_names_the_fix_in_one_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "x0;x1;x2;y\n1;2;-0,884;0\n3;4;0,5;1\n5;6;1,25;0\n")
    assert message == ("data.path: column 'x2' holds decimal commas ('-0,884' at line 2); "
                       "add data.decimal=comma")


def test_decimal_comma_rejects_a_decimal_point(tmp_path: Path) -> None:
    message = error_of(tmp_path, "a;y\n1,5;0\n1.234,5;1\n", decimal=",")
    assert "column 'a'" in message and "'1.234,5'" in message and "line 3" in message
    assert "data.decimal" in message


def test_decimal_comma_labels_and_missing_values(tmp_path: Path) -> None:
    text = "a;y\n1,5;1,0\n2;0\nNA;1\n3,5;0,0\n"
    with pytest.warns(DroppedRowsWarning) as record:
        data = load_text(tmp_path, text, decimal=",", drop_na=True)
    assert data.X.tolist() == [[1.5], [2.0], [3.5]]
    assert data.classes == ("0", "1") and data.y.tolist() == [1, 0, 0]
    warning = record[0].message
    assert isinstance(warning, DroppedRowsWarning) and warning.lines == (4,)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["data.decimal=x"], "data.decimal: got 'x'"),
        (["data.decimal=';'"], "data.decimal: got ';'"),
        (["data.decimal=',,'"], "data.decimal: got ',,'"),
        (["data.decimal=','", "data.delimiter=','"], "data.delimiter"),
    ],
)
def test_schema_rejects_bad_decimal(compose_cfg, overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.decimal") as info:
        validate(compose_cfg("data=csv", "data.path=some.csv", *overrides))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "decimal"), [("','", ","), ("comma", ","), ("'.'", "."),
                                               ("point", ".")])
def test_schema_accepts_decimal(compose_cfg, value: str, decimal: str) -> None:
    config = validate(compose_cfg("data=csv", "data.path=some.csv", f"data.decimal={value}",
                                  "data.delimiter=';'"))
    assert config.data.decimal == decimal
    assert validate(compose_cfg("data=csv", "data.path=some.csv")).data.decimal == "."


@pytest.mark.parametrize(("value", "delimiter"), [("tab", "\t"), ("semicolon", ";"),
                                                 ("pipe", "|"), ("';'", ";"), ("null", None)])
def test_schema_resolves_delimiter_names(compose_cfg, value: str, delimiter: str | None) -> None:
    config = validate(compose_cfg("data=csv", "data.path=some.csv", f"data.delimiter={value}"))
    assert config.data.delimiter == delimiter


@pytest.mark.parametrize(("overrides", "key"), [
    (["data.delimiter=';;'"], "data.delimiter"), (["data.header=maybe"], "data.header"),
    (["data.label_column=true"], "data.label_column"), (["data.label_column=1.5"],
                                                         "data.label_column"),
    (["data.drop_na=maybe"], "data.drop_na"),
    (["data.decimal=komma"], "data.decimal"), (["data.delimiter='\"'"], "data.delimiter")])
def test_schema_rejects_bad_csv_options(compose_cfg, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg("data=csv", "data.path=some.csv", *overrides))
    assert str(info.value).startswith(key) and "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "header"), [("auto", "auto"), ("true", True),
                                               ("false", False), ("TRUE", True)])
def test_schema_gives_the_loader_its_header_value(compose_cfg, value: str, header: object
                                                  ) -> None:
    config = validate(compose_cfg("data=csv", "data.path=some.csv", f"data.header={value}"))
    assert config.data.header == header


# ---------------------------------------------------------------- what data.path points at


def call_with_timeout(fn: Callable[[], object], seconds: float) -> BaseException | None:
    """The exception ``fn`` raised in a thread, or pytest.fail if it is still running."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as err:  # handed to the test
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s (blocked?)")
    return outcome[0]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.csv"
    os.mkfifo(fifo)
    try:
        error = call_with_timeout(lambda: load_csv(fifo), 20)
    finally:  # a reader blocked in open() would return once a writer appears
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(error, DataError)
    assert str(error) == (f"data.path: {str(fifo)!r} is a named pipe (FIFO), not a file; save "
                          "what it streams to a file and point data.path at that file")
    assert isinstance(call_with_timeout(lambda: check_csv_path(fifo), 20), DataError)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_character_device() -> None:
    error = call_with_timeout(lambda: load_csv("/dev/zero"), 20)
    assert str(error) == ("data.path: '/dev/zero' is a character device, not a file; "
                          "point data.path at a CSV file")


def test_directory_says_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_csv(tmp_path)
    assert str(info.value) == (f"data.path: {str(tmp_path)!r} is a directory, not a file; "
                               "point data.path at a CSV file inside it")


def test_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        with pytest.raises(DataError, match=r"data\.path: '.*s\.csv' is a socket, not a file"):
            load_csv(path)


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "data.csv"
    link.symlink_to(tmp_path / "gone.csv")
    message = str(call_with_timeout(lambda: load_csv(link), 20))
    assert "symbolic link" in message and "gone.csv" in message and "does not exist" in message


def test_unreadable_file_says_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "1,0\n2,1\n")
    if os.geteuid() != 0:  # root reads a mode-000 file: simulate the refusal instead
        path.chmod(0)
    else:
        real_open = open

        def refusing_open(file: object, *args: object, **kwargs: object) -> object:
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(load_csv_module, "open", refusing_open, raising=False)
    try:
        with pytest.raises(DataError) as info:
            load_csv(path)
    finally:
        path.chmod(0o644)
    message = str(info.value)
    assert "permission denied" in message and "\n" not in message and repr(str(path)) in message


# ---------------------------------------------------------------- large files


def write_large(tmp_path: Path, n_rows: int, seed: int = 0) -> tuple[Path, np.ndarray, list[str]]:
    """A CSV of n_rows: 5 float features in several spellings and quoted text labels."""
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=100.0, size=(n_rows, 5))
    X[:, 1] = X[:, 1].round(3)
    X[:, 2] = np.floor(X[:, 2])
    labels = rng.choice(["yes", "no", "may,be", 'say "no"'], size=n_rows).tolist()
    lines = ["f0,f1,f2,f3,f4,label"]
    for row, label in zip(X.tolist(), labels, strict=True):
        quoted = '"' + label.replace('"', '""') + '"' if ("," in label or '"' in label) else label
        lines.append(f"{row[0]!r},{row[1]},{int(row[2])},{row[3]:.6e},{row[4]!r},{quoted}")
    path = tmp_path / "large.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, X, labels


def test_large_file_matches_pandas(tmp_path: Path) -> None:
    path, _, _ = write_large(tmp_path, 200_000)
    assert path.stat().st_size > 8 * 1024 * 1024  # several pyarrow blocks
    data = load_csv(path)
    frame = pd.read_csv(path)
    assert data.feature_names == ("f0", "f1", "f2", "f3", "f4") and data.label_name == "label"
    assert np.array_equal(data.X, frame[list(data.feature_names)].to_numpy(dtype=np.float64))
    assert data.classes == ("may,be", "no", 'say "no"', "yes")
    assert [data.classes[i] for i in data.y] == frame["label"].tolist()
    # the same numbers as a European export: ';' between fields, decimal commas
    european = tmp_path / "european.csv"
    european.write_text(path.read_text().replace(",", ";").replace(".", ","), encoding="utf-8")
    eu = load_csv(european, decimal=",")
    assert np.array_equal(eu.X, data.X)
    assert eu.classes == ("may;be", "no", 'say "no"', "yes")


def test_python_reader_gives_the_same_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, _ = write_large(tmp_path, 30_000, seed=1)
    by_arrow = load_csv(path)

    def gives_up(*args: object) -> Iterator[object]:
        raise load_csv_module._ArrowGaveUp("forced")
        yield  # a generator, as the real one

    monkeypatch.setattr(load_csv_module, "_arrow_batches", gives_up)
    assert load_csv(path).digest() == by_arrow.digest()


def test_large_file_line_numbers_after_blank_and_multiline_rows(tmp_path: Path) -> None:
    lines = ["a,b,y", '1,2,"two\nlines"', "", "   "]
    lines += [f"{i},{i % 7},{'yes' if i % 3 else 'no'}" for i in range(100_000)]
    lines[50_000] = "5,NA,yes"  # file line 50,002 (the quoted row spans two lines)
    lines[99_000] = "6,,no"
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.warns(DroppedRowsWarning) as record:
        data = load_csv(path, drop_na=True, label_column="y")
    warning = record[0].message
    assert isinstance(warning, DroppedRowsWarning)
    assert warning.lines == (50_002, 99_002)
    assert data.n_samples == 100_001 - 2


# ---------------------------------------------------------------- fast paths agree with the rules

NUMBER_TEXTS = st.text(alphabet="0123456789+-.eEinfatyINFATY ()_,x\t", max_size=8)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(NUMBER_TEXTS, min_size=1, max_size=20), decimal=st.sampled_from(".,"))
def test_arrow_cast_fast_path_agrees_with_the_number_rules(texts: list[str], decimal: str) -> None:
    strings = pa.array(texts, type=pa.string())
    fast_values, fast_bad, _ = load_csv_module._floats(strings, decimal)
    exact_values, exact_bad, _ = load_csv_module._floats_exact(strings, decimal)
    assert fast_bad.tolist() == exact_bad.tolist()
    good = np.setdiff1d(np.arange(len(texts)), exact_bad)
    assert np.array_equal(fast_values[good], exact_values[good], equal_nan=True)
    for i in good:  # and the rules are Python's float() on the stripped text
        text = texts[i].strip()
        expected = np.nan if load_csv_module._is_missing(text) else float(
            text.replace(",", "."))
        assert np.array_equal(exact_values[i], expected, equal_nan=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.lists(st.text(alphabet='ab1 ,;"\r\n', max_size=4), min_size=2,
                           max_size=3), min_size=1, max_size=6),
    delimiter=st.sampled_from([",", ";"]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_arrow_rows_are_python_csv_rows(
    rows: list[list[str]], delimiter: str, newline: str
) -> None:
    """Where pyarrow reads a file at all, it splits rows and fields as Python's csv does."""
    text = newline.join(delimiter.join(row) for row in rows)
    python_rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
                   if not load_csv_module._is_blank_row(row)]
    if not python_rows or len(python_rows[0]) < 2:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), text)
        try:
            blocks = list(load_csv_module._arrow_batches(path, delimiter, len(python_rows[0])))
        except load_csv_module._ArrowGaveUp:
            return  # then Python's csv module reads the file
    arrow_rows = [list(row) for block in blocks
                  for row in zip(*(column.to_pylist() for column in block), strict=True)]
    assert arrow_rows == python_rows
