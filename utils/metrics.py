"""Classifier and detector metrics: calibration error and AUROC (scikit-learn's, imported where used: importing it
takes over a second, which every eval_maebm.py start would pay)."""
import numpy as np


def calibration_bins(confidence, correct, n_bins=15):
    """Per equal-width confidence bin: (lower edge, upper edge, count, mean confidence, accuracy)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        bins.append((edges[b], edges[b + 1], n, float(confidence[m].mean()) if n else 0.0,
                     float(correct[m].mean()) if n else 0.0))
    return bins


def expected_calibration_error(confidence, correct, n_bins=15):
    """ECE: bin-size-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    bins = calibration_bins(confidence, correct, n_bins)
    total = sum(b[2] for b in bins)
    return float(sum(b[2] * abs(b[4] - b[3]) for b in bins) / total)


def auroc(scores_in, scores_out):
    """Area under the ROC curve for telling in-distribution (label 1, higher score) from OOD (label 0)."""
    from sklearn.metrics import roc_auc_score
    scores, labels = _labelled(scores_in, scores_out)
    return float(roc_auc_score(labels, scores))


def _labelled(scores_in, scores_out):
    scores = np.concatenate([np.asarray(scores_in, float), np.asarray(scores_out, float)])
    return scores, np.concatenate([np.ones(len(scores_in)), np.zeros(len(scores_out))])


def aupr(scores_in, scores_out):
    """Area under the precision-recall curve with in-distribution as the positive class (sklearn's AP)."""
    from sklearn.metrics import average_precision_score
    scores, labels = _labelled(scores_in, scores_out)
    return float(average_precision_score(labels, scores))


def fpr_at_95_tpr(scores_in, scores_out):
    """The fraction of OOD inputs accepted at the threshold that keeps 95% of the in-distribution ones."""
    from sklearn.metrics import roc_curve
    scores, labels = _labelled(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def roc(scores_in, scores_out):
    """(false-positive rates, true-positive rates) of the ROC curve."""
    from sklearn.metrics import roc_curve
    scores, labels = _labelled(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr
