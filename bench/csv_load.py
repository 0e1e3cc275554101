"""Loading a large CSV: ``stages.load_csv`` on a 1,000,000 x 10 file (``--only csv``).

The bench writes two files of the same numbers into a temporary folder: 9 normal features
with 5 decimals and a 0/1 label, ``,``-delimited with decimal points (about 78 MB), and
``;``-delimited with decimal commas (read with ``decimal=","``). Each file is loaded in a
fresh process (``python -m bench.csv_load <file> [decimal]``) that imports the loader first,
notes its RSS, loads, and reports the wall time and its peak RSS. The figure is the peak's
growth over the RSS just before loading, divided by the file's size: the loader's own
memory, which the loader promises to keep to ~3x the file (the Dataset it returns, float64
features, is alone ~0.93x such a file).

Peaks come from ``VmHWM`` of /proc/self/status (``ru_maxrss`` where /proc is missing):
Linux carries ru_maxrss across exec, so a child's ru_maxrss would start at its parent's RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import children
from bench.report import markdown_table

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ROWS = 1_000_000
FEATURES = 9
MIB = 1024 * 1024


@dataclass(frozen=True)
class CsvLoadResult:
    """One load in a fresh process: seconds, RSS before and at the peak (bytes)."""

    name: str
    file_bytes: int
    seconds: float
    before_bytes: int
    peak_bytes: int
    shape: tuple[int, int]

    @property
    def growth_bytes(self) -> int:
        return self.peak_bytes - self.before_bytes

    @property
    def ratio(self) -> float:
        return self.growth_bytes / self.file_bytes


def write_csv(path: Path, rows: int = ROWS, decimal: str = ".", seed: int = 0) -> int:
    """Write ``rows`` x (FEATURES + 1) numbers (header x0..x8,y); returns the file's size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    columns = {f"x{i}": rng.normal(size=rows).round(5) for i in range(FEATURES)}
    columns["y"] = rng.integers(0, 2, size=rows)
    table = pa.table(columns)
    delimiter = ";" if decimal == "," else ","
    with open(path, "wb") as handle:
        handle.write((delimiter.join(table.column_names) + "\n").encode("ascii"))
        if decimal == ".":
            pacsv.write_csv(table, handle, pacsv.WriteOptions(
                include_header=False, delimiter=delimiter, quoting_style="none"))
        else:  # pyarrow writes decimal points only: swap them, 100,000 rows at a time
            for start in range(0, rows, 100_000):
                sink = pa.BufferOutputStream()
                pacsv.write_csv(table.slice(start, 100_000), sink, pacsv.WriteOptions(
                    include_header=False, delimiter=delimiter, quoting_style="none"))
                handle.write(sink.getvalue().to_pybytes().replace(b".", b","))
    return path.stat().st_size


def _rss_bytes(field: str) -> int:
    """VmRSS/VmHWM of this process in bytes; ru_maxrss (KiB on Linux) where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: str, decimal: str) -> dict[str, object]:
    """Runs in the fresh process: import the loader, note RSS, load, note time and peak."""
    from stages.load_csv import load_csv

    before = _rss_bytes("VmRSS")
    start = time.perf_counter()
    data = load_csv(path, decimal=decimal) if decimal != "." else load_csv(path)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "before": before, "peak": _rss_bytes("VmHWM"),
            "shape": list(data.X.shape)}


def measure(path: Path, name: str, decimal: str = ".") -> CsvLoadResult:
    """Load ``path`` in a fresh process; raises RuntimeError with its stderr if it fails."""
    done = children.run([sys.executable, "-m", "bench.csv_load", str(path), decimal],
                        cwd=PROJECT_ROOT)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"loading {path.name} failed ({done.returncode}): {tail}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return CsvLoadResult(name=name, file_bytes=path.stat().st_size, seconds=out["seconds"],
                         before_bytes=out["before"], peak_bytes=out["peak"],
                         shape=tuple(out["shape"]))


def measure_csv_loads(say: Callable[[str], None], rows: int = ROWS,
                      folder: Path | None = None) -> list[CsvLoadResult]:
    """Write both files into a temporary folder (or ``folder``) and load each once."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-csv-") as tmp:
        work = folder or Path(tmp)
        for name, decimal in ((", delimiter, decimal point", "."),
                              ("; delimiter, decimal comma", ",")):
            path = work / f"points{'_comma' if decimal == ',' else ''}.csv"
            say(f"csv: writing {rows:,} rows x {FEATURES + 1} ({name})")
            write_csv(path, rows, decimal)
            say(f"csv: loading {path.name} ({path.stat().st_size / MIB:.0f} MiB) in a fresh "
                "process")
            results.append(measure(path, name, decimal))
            path.unlink()
    return results


def csv_markdown(results: list[CsvLoadResult]) -> str:
    """The "Loading a CSV" section of bench.md."""
    rows = [[r.name, f"{r.shape[0]:,} x {r.shape[1] + 1}", f"{r.file_bytes / MIB:.0f} MiB",
             f"{r.seconds:.2f} s", f"{r.growth_bytes / MIB:.0f} MiB",
             f"{r.ratio:.2f}x", f"{r.before_bytes / MIB:.0f} MiB"] for r in results]
    header = ["file", "rows x columns", "size", "load time", "peak RSS growth",
              "growth / file size", "RSS before loading (imports)"]
    return "\n".join([
        "## Loading a CSV", "",
        "`stages.load_csv` in a fresh process per file; growth = peak RSS (VmHWM) minus the "
        "RSS just before the call. The returned Dataset alone holds the features as float64 "
        "(8 bytes per value).", "", markdown_table(header, rows), ""])


if __name__ == "__main__":  # the child: python -m bench.csv_load <file> <decimal>
    print(json.dumps(child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ".")))
