import numpy as np
import pytest

from utils.metrics import auroc, expected_calibration_error


def test_ece_of_a_perfectly_calibrated_predictor_is_about_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 200000)
    correct = rng.uniform(size=conf.size) < conf
    assert expected_calibration_error(conf, correct) < 0.005


def test_ece_of_an_overconfident_predictor():
    conf = np.full(1000, 0.9)
    correct = np.arange(1000) < 600
    assert expected_calibration_error(conf, correct) == pytest.approx(0.3)


def test_auroc_identical_sets_and_separated_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20000)
    b = rng.normal(size=20000)
    assert auroc(a, b) == pytest.approx(0.5, abs=0.01)
    assert auroc(a + 10, b) == pytest.approx(1.0)
    assert auroc(a - 10, b) == pytest.approx(0.0)


def test_cross_correlation_finds_the_lag():
    from eval_maebm import cross_correlation
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    b = np.roll(a, 3)  # b[t] = a[t - 3]: a leads b by 3 steps
    lags, corr = cross_correlation(a, b, 10)
    assert lags[np.argmax(corr)] == 3 and corr.max() > 0.95
    assert abs(corr[lags == 0][0]) < 0.2
