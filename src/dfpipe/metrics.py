"""Classification metrics: the one place every stage computes scores (training selection, evaluation).

Owner: evaluate. Training imports :func:`macro_f1` for model selection on the val split.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-averaged F1 over ``num_classes`` labels (absent classes count as 0, not skipped)."""
    return float(
        f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0)
    )
