"""load_csv: RustNet's diabetes CSV, header/delimiter/label detection, one test per error."""

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.dataset import DataError, Dataset
from stages.load_csv import DroppedRowsWarning, load_csv

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


def test_explicit_delimiter_and_alias(tmp_path: Path) -> None:
    assert load_text(tmp_path, "1\t2\t0\n3\t4\t1\n", delimiter="tab").n_features == 2
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


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"header": "yes"}, "data.header"),
        ({"delimiter": ",,"}, "data.delimiter"),
        ({"delimiter": '"'}, "data.delimiter"),
        ({"drop_na": "no"}, "data.drop_na"),
        ({"label_column": 1.5}, "data.label_column"),
        ({"label_column": True}, "data.label_column"),
    ],
)
def test_bad_options_name_the_key(tmp_path: Path, kwargs: dict, key: str) -> None:
    assert key in error_of(tmp_path, "1,0\n2,1\n", **kwargs)


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
