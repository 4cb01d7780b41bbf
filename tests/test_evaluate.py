import pytest

from lmchain.evaluate import classification_metrics


def test_classification_metrics():
    m = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert m["per_class_f1"] == pytest.approx([0.5, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_metrics_with_absent_class():
    m = classification_metrics([0, 0], [0, 0], 2)
    assert m["accuracy"] == 1.0 and m["per_class_f1"] == [1.0, 0.0]
