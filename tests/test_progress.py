"""The console progress bar: redraws one line, ends it exactly once."""

import io

from pipeline.run.progress import ProgressBar


def test_progress_bar_draws_and_ends_its_line_once() -> None:
    stream = io.StringIO()
    with ProgressBar(3, stream=stream) as bar:
        for epoch in (1, 2, 3):
            bar._last = 0.0  # no redraw throttling in the test
            bar(epoch, {"train_loss": 0.5, "train_accuracy": 0.75}, None)
    text = stream.getvalue()
    assert "epoch      3/3 [" in text and "loss 0.5000 acc 0.750" in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_runner_shows_no_bar_when_told_not_to(monkeypatch) -> None:
    from pipeline.run.runner import _show_progress

    assert _show_progress("false") is False
    assert _show_progress("true") is True
    monkeypatch.setenv("CI", "true")
    assert _show_progress("auto") is False
