"""Top-1 accuracy, per-class accuracy and confusion matrices of classifier predictions, and their PNG."""
import dataclasses
import io

import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.fileio import atomic_write_bytes


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Predictions of one model on labelled data.

    name: what to call the model in tables; kind: "float", "int8" or "bundle";
    labels / predictions: int [N]; num_classes: the model's output count.
    """

    name: str
    kind: str
    labels: np.ndarray
    predictions: np.ndarray
    num_classes: int

    @classmethod
    def from_scores(cls, name, kind, labels, scores):
        """An Evaluation from scores [N, classes] (top-1 = argmax) and int labels [N]."""
        scores, labels = np.asarray(scores), np.asarray(labels, np.int64)
        if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
            raise TinyVisionError(f"{name}: {scores.shape} scores for {len(labels)} labels")
        if labels.max() >= scores.shape[1]:
            raise TinyVisionError(f"{name} has {scores.shape[1]} outputs but the data has label {labels.max()}")
        return cls(name, kind, labels, np.argmax(scores, axis=1), scores.shape[1])

    @property
    def accuracy(self):
        return float(np.mean(self.predictions == self.labels))

    @property
    def confusion(self):
        """int [classes, classes]: row = true class, column = predicted class."""
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix

    def per_class(self):
        """float [classes]: accuracy on the samples of each true class (NaN for a class with none)."""
        matrix = self.confusion
        totals = matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def plot_confusion(evaluations, class_names, path):
    """Write one confusion-matrix panel per evaluation (counts, row-normalized colour) to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = evaluations[0].num_classes
    side = max(3.2, 0.45 * classes + 1.8)
    fig = Figure(figsize=(side * len(evaluations), side + 0.6), dpi=110)
    FigureCanvasAgg(fig)
    ticks = list(range(classes))
    for i, evaluation in enumerate(evaluations):
        ax = fig.add_subplot(1, len(evaluations), i + 1)
        matrix = evaluation.confusion
        rows = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(matrix / rows, cmap="Blues", vmin=0, vmax=1)
        if classes <= 20:
            for (y, x), count in np.ndenumerate(matrix):
                if count:
                    ax.text(x, y, str(count), ha="center", va="center", fontsize=8,
                            color="white" if matrix[y, x] / rows[y, 0] > 0.5 else "black")
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticklabels(class_names if i == 0 else [], fontsize=8)
        ax.set_xlabel("predicted")
        if i == 0:
            ax.set_ylabel("true class")
        ax.set_title(f"{evaluation.name} ({evaluation.kind})\naccuracy {evaluation.accuracy:.3f}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
