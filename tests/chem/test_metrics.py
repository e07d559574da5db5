import math

import pytest
import torch

from structnets.chem.metrics import Task, classification_metrics, loss, metrics, regression_metrics, roc_auc


def test_roc_auc_matches_pairwise_count():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(scores, labels) == pytest.approx(expected)


def test_roc_auc_of_one_class_is_nan_and_of_a_perfect_ranking_one():
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 1.0])))
    assert roc_auc(torch.tensor([-2.0, -1.0, 3.0]), torch.tensor([0.0, 0.0, 1.0])) == 1.0


def test_regression_metrics_in_the_targets_units():
    true = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    pred = true + torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, 1.0]])
    out = regression_metrics(pred, true, ["a", "flat"])
    assert out["a"] == {"rmse": 1.0, "mae": 1.0, "r2": pytest.approx(1 - 4 / 5)}
    assert math.isnan(out["flat"]["r2"])  # a constant target has no variance to explain


def test_classification_metrics_read_logits():
    logits = torch.tensor([[-1.0], [2.0], [0.5], [-3.0]])
    labels = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    assert classification_metrics(logits, labels, ["tox"]) == {"tox": {"accuracy": 0.75, "roc_auc": 1.0}}
    assert metrics(logits, labels, ["tox"], Task.CLASSIFICATION) == classification_metrics(logits, labels, ["tox"])
    assert metrics(logits[:0], labels[:0], ["tox"], Task.REGRESSION) == {}


def test_loss_is_mse_or_cross_entropy_on_logits():
    output, target = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [0.0]])
    assert float(loss(output, target, Task.REGRESSION)) == pytest.approx((1 + 4) / 2)
    expected = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2)))) / 2
    assert float(loss(output, target, Task.CLASSIFICATION)) == pytest.approx(expected)
