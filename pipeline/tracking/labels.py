"""The class labels a model answers with, in the type the data had.

A checkpoint stores its classes as text (``metadata["classes"]``, e.g. ``["0", "1"]`` or
``["no", "yes"]``): the CSV loader writes numeric labels as canonical integers
(``str(int(v))``) and keeps any other labels as text. So classes that all read back as
canonical integers were integer labels, and the model returns them as integers; any other
set of classes stays text. Checkpoints written before this rule load unchanged.

No MLflow here: the pyfunc model's code imports this module wherever it is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def integer_classes(classes: Sequence[object]) -> bool:
    """True when every class is an integer written canonically ("0", "1", "-3")."""
    return bool(classes) and all(_INTEGER.fullmatch(str(c)) for c in classes)


def class_labels(classes: Sequence[object]) -> list[int] | list[str]:
    """The classes as ints when :func:`integer_classes`, else as text."""
    if integer_classes(classes):
        return [int(str(c)) for c in classes]
    return [str(c) for c in classes]
