"""Checks of the input file that need only the config and the file's first rows: made before
an MLflow run exists, so a missing file or a wrong label column leaves no FAILED run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from stages.dataset import DataError
from stages.load_csv import DroppedRowsWarning, load_csv, precheck_csv

ROWS = "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(40))
# name: (file bytes, or None: no file, or "dir": a directory; load_csv options; fragment)
REFUSED = {
    "missing": (None, {}, "does not exist"),
    "directory": ("dir", {}, "is a directory"),
    "empty": (b"", {}, "is empty"),
    "binary": (bytes(range(256)) * 4, {}, "not a text"),
    "latin1": ("a,b,label\n1,\xe9,0\n".encode("latin-1") + ROWS.encode(), {}, "not UTF-8"),
    "ambiguous_delimiter": (b"1,5;2\n3,1;4\n", {}, "data.delimiter"),
    "single_column": (b"a\n1\n2\n", {}, "single column"),
    "label_not_found": (b"a,b,label\n" + ROWS.encode(), {"label_column": "target"},
                        "'target' not found"),
    "label_without_header": (ROWS.encode(), {"label_column": "label"}, "no header row"),
    "label_out_of_range": (ROWS.encode(), {"label_column": 5}, "out of range"),
    "duplicate_names": (b"a,a,label\n" + ROWS.encode(), {}, "twice"),
    "header_only": (b"a,b,label\n", {}, "no data rows"),
    "decimal_commas": (b"a;b;label\n1,5;2;0\n" + ROWS.replace(",", ";").encode(), {},
                       "data.decimal=comma"),
    "decimal_point_with_comma_set": (b"a;b;label\n1.5;2;0\n" + ROWS.replace(",", ";").encode(),
                                     {"decimal": ","}, "data.decimal='.'"),
    # a first row whose text reappears below is data, not a header (rule c of load_csv)
    "first_row_repeats": (b"x,yes\n" + b"".join(
        f"{i},{'yes' if i % 2 else 'no'}\n".encode() for i in range(40)), {}, "'x' at line 1"),
    "text_feature": (b"a,b,label\n1,x7,0\n" + ROWS.encode(), {}, "non-numeric value 'x7'"),
}


def write_case(tmp_path: Path, content: bytes | str | None) -> Path:
    path = tmp_path / "data.csv"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_precheck_refuses_what_the_full_load_refuses_with_the_same_line(tmp_path,
                                                                             case) -> None:
    content, options, fragment = REFUSED[case]
    path = write_case(tmp_path, content)
    with pytest.raises(DataError) as early:
        precheck_csv(path, **options)
    with pytest.raises(DataError) as full:
        load_csv(path, **options)
    assert fragment in str(early.value)
    assert str(early.value) == str(full.value)  # one set of rules, not a parser of its own


ACCEPTED = {
    "diabetes": (PROJECT_ROOT / "data" / "rustnet_diabetes.csv").read_bytes(),
    "semicolons_yes_no": ("a;b;answer\n" + "".join(
        f"{i % 7};{(i * 3) % 5};{'yes' if i % 2 else 'no'}\n" for i in range(60))).encode(),
    # missing values are the full load's to count (data.drop_na may drop them)
    "missing_values": b"a,b,label\n1,,0\n3,NaN,1\n" + ROWS.encode(),
    "numeric_names": b"1,2,3\n" + ROWS.encode(),  # with data.header=true
    "decimal_commas_set": b"a;b;label\n1,5;2;0\n" + ROWS.replace(",", ";").encode(),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_the_precheck_passes_what_loads(tmp_path, case) -> None:
    path = write_case(tmp_path, ACCEPTED[case])
    options: dict = {"decimal": ","} if case == "decimal_commas_set" else {}
    if case == "numeric_names":
        options = {"header": True, "label_column": "3"}
    if case == "missing_values":
        options = {"drop_na": True}
    if options.pop("drop_na", False):
        with pytest.warns(DroppedRowsWarning):
            load_csv(path, drop_na=True, **options)
    else:
        load_csv(path, **options)
    precheck_csv(path, **options)


def test_the_precheck_reads_only_the_first_rows(tmp_path) -> None:
    """A bad value far down the file is the full load's to find; the precheck of a large
    file takes milliseconds."""
    path = tmp_path / "big.csv"
    good = "".join(f"{i % 97},{i % 89},{i % 2}\n" for i in range(400_000))
    path.write_text("a,b,label\n" + good + "1,x,0\n")
    started = time.perf_counter()
    precheck_csv(path)
    assert time.perf_counter() - started < 0.5
    with pytest.raises(DataError, match="non-numeric value 'x'"):
        load_csv(path)


# -- end to end: one line, exit 1, and no run in the store --------------------------------
ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
CLI_CASES = {
    "missing": (None, [], "does not exist"),
    "directory": ("dir", [], "is a directory"),
    "label_not_found": (b"a,b,label\n" + ROWS.encode(), ["data.label_column=target"],
                        "'target' not found"),
    "decimal_commas": (b"a;b;label\n1,5;2;0\n" + ROWS.replace(",", ";").encode(), [],
                       "data.decimal=comma"),
}


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the cases, made once (a new sqlite store's migrations take seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_a_bad_input_file_fails_before_any_run(tmp_path, existing_store, case) -> None:
    content, extra, fragment = CLI_CASES[case]
    path = write_case(tmp_path, content)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "data=csv", f"data.path={path}", *extra,
         f"tracking.uri={existing_store}", "train.epochs=5", f"hydra.run.dir={tmp_path / 'out'}",
         f"pipeline.cache_dir={tmp_path / 'c'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and "MLflow run" not in done.stderr, done.stderr
    assert len(lines) == 1 and fragment in lines[0], lines
    assert lines[0].startswith(("data.path", "data.label_column")), lines
    client = MlflowClient(existing_store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []
    assert not (tmp_path / "out" / "journal.jsonl").exists()
