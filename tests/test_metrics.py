"Evaluation metrics against scikit-learn / scipy / direct formulas, bootstrap determinism, skip accounting, CI coverage"
import numpy as np, pandas as pd, pytest, torch
from scipy.stats import norm, pearsonr
from sklearn.metrics import (average_precision_score, mean_absolute_error, mean_squared_error, r2_score,
                             roc_auc_score)
from ecg_dml.evaluate.metrics import (METRICS, MetricError, auprc, auroc, bootstrap_indices, bootstrap_metrics,
                                      mae, metric_values, paired_bootstrap, pearson_r, r2, retrieval_metrics,
                                      retrieval_scores, rmse)

# fixed inputs: 12 cases, ties in the scores, one class row without negatives
Y = np.array([[1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1],
              [0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
S = np.array([[.9, .1, .8, .4, .4, .2, .7, .3, .6, .5, .1, .4],
              [.2, .3, .3, .9, .1, .3, .5, .5, .4, .2, .8, .1],
              [.5, .5, .5, .1, .2, .3, .4, .6, .7, .8, .9, .0]])

def test_auroc_auprc_match_sklearn_with_ties():
    for y, s in zip(Y[:2], S[:2]):
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    v = auroc(Y, S)                                    # rows at once; the all-positive row is undefined
    assert v.shape == (3,) and np.isnan(v[2])
    assert np.isnan(auprc(np.zeros(5), np.arange(5.)))  # no positive: undefined
    assert auroc(Y[0], S[0]) == pytest.approx(33 / 36)  # by hand: 6 x 6 (pos, neg) pairs, 31 ordered + 2 ties of 1/2

def test_auroc_auprc_random_batches_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random((40, 57)) < 0.3; s = np.round(rng.random((40, 57)), 1)
    keep = y.any(1) & ~y.all(1)
    np.testing.assert_allclose(auroc(y, s)[keep], [roc_auc_score(a, b) for a, b in zip(y[keep], s[keep])], atol=1e-12)
    np.testing.assert_allclose(auprc(y, s)[keep], [average_precision_score(a, b) for a, b in zip(y[keep], s[keep])], atol=1e-12)

def test_regression_metrics_match_sklearn_and_scipy():
    y = np.array([63., 45, 90, 27, 71, 55, 38, 82, 60, 49])
    p = np.array([58., 50, 77, 35, 66, 61, 45, 70, 59, 52])
    assert mae(y, p) == pytest.approx(mean_absolute_error(y, p))
    assert rmse(y, p) == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert pearson_r(y, p) == pytest.approx(pearsonr(y, p).statistic)
    assert r2(y, p) == pytest.approx(r2_score(y, p))
    assert mae(y, p) == pytest.approx(np.mean(np.abs(y - p)))   # the direct formula too
    assert np.isnan(r2(np.full(4, 3.), np.arange(4.))) and np.isnan(pearson_r(np.full(4, 3.), np.arange(4.)))

def test_bootstrap_deterministic_and_seeded():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 3)) < 0.3).astype(float); s = y * 0.5 + rng.random((300, 3))
    a, b = bootstrap_metrics(y, s, seed=7), bootstrap_metrics(y, s, seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = bootstrap_metrics(y, s, seed=8)
    assert not np.allclose(a.ci_low, c.ci_low)
    np.testing.assert_array_equal(bootstrap_indices(300, 1000, 7), np.random.default_rng(7).integers(0, 300, (1000, 300)))
    assert list(a.target) == ['y0', 'y1', 'y2', 'macro'] * 2 and (a.n_skipped == 0).all()
    m = a.set_index(['metric', 'target'])
    assert m.loc[('auroc', 'y1'), 'value'] == pytest.approx(roc_auc_score(y[:, 1], s[:, 1]))
    assert m.loc[('auroc', 'macro'), 'value'] == pytest.approx(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(3)]))

def test_bootstrap_chunks_do_not_change_results():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 2)) < 0.4).astype(float); s = rng.random((80, 2))
    idx = bootstrap_indices(80, 200, 0)
    v1, ok1 = metric_values(y, s, 'auprc', idx)
    v2, ok2 = metric_values(y, s, 'auprc', idx, chunk=500)          # 3 resamples per block
    np.testing.assert_array_equal(ok1, ok2); np.testing.assert_allclose(v1[ok1], v2[ok2])
    np.testing.assert_allclose(v1[:, 0], [average_precision_score(y[i, 0], s[i, 0]) for i in idx])

def test_skipped_resamples_counted_exactly():
    "a rare class: the count of skipped resamples equals the resamples without a positive, and the warning says so"
    y = np.zeros(30); y[[4, 17]] = 1
    s = np.linspace(0, 1, 30)
    with pytest.warns(UserWarning, match='n_skipped'): t = bootstrap_metrics(y, s, n_boot=1000, seed=3)
    idx = bootstrap_indices(30, 1000, 3)
    expected = int((~(y[idx].any(1) & ~y[idx].all(1))).sum())
    assert expected > 50 and (t.n_skipped == expected).all()
    vals = [roc_auc_score(y[i], s[i]) for i in idx if 0 < y[i].sum() < 30]
    assert t.ci_low.iloc[0] == pytest.approx(np.percentile(vals, 2.5)) and t.ci_high.iloc[0] == pytest.approx(np.percentile(vals, 97.5))

def test_bootstrap_ci_coverage_binormal():
    "95 % percentile CIs of AUROC cover the true value in roughly 95 % of simulated studies"
    d, n, hits = 1.0, 120, 0
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(123)
    trials = 150
    for t in range(trials):
        y = np.r_[np.ones(n // 2), np.zeros(n // 2)]
        s = np.r_[rng.normal(d, 1, n // 2), rng.normal(0, 1, n // 2)]
        r = bootstrap_metrics(y, s, ['auroc'], n_boot=500, seed=t).iloc[0]
        hits += r.ci_low <= truth <= r.ci_high
    assert 0.88 <= hits / trials <= 0.99, hits / trials

def test_paired_bootstrap():
    rng = np.random.default_rng(4)
    y = (rng.random(200) < 0.4).astype(float)
    good, bad = y + rng.normal(0, 0.6, 200), y + rng.normal(0, 3, 200)
    r = paired_bootstrap(y, good, bad, 'auroc', seed=0)
    assert r['diff'] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, bad))
    assert r['ci_low'] > 0 and r['p_value'] < 0.01
    same = paired_bootstrap(y, good, good.copy(), 'auroc')
    assert same['diff'] == 0 and same['p_value'] == 1.0
    mae_cmp = paired_bootstrap(rng.normal(size=50), rng.normal(size=50), rng.normal(size=50), 'mae')
    assert 0 < mae_cmp['p_value'] <= 1

def _loop_retrieval(e, lab, ks):
    rec, aps = {k: [] for k in ks}, []
    for i in range(len(e)):
        d = np.linalg.norm(e - e[i], axis=1); d[i] = np.inf
        o = np.argsort(d, kind='stable')[:-1]; R = int((lab == lab[i]).sum() - 1)
        if R == 0: continue
        rel = (lab[o] == lab[i]).astype(float)
        for k in ks: rec[k].append(rel[:k].max())
        aps.append(sum(rel[:j + 1].sum() / (j + 1) * rel[j] for j in range(R)) / R)
    return {k: np.mean(v) for k, v in rec.items()}, np.mean(aps)

def test_retrieval_against_loop_and_pytorch_metric_learning():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN
    from pytorch_metric_learning.distances import LpDistance, CosineSimilarity
    rng = np.random.default_rng(5)
    lab = rng.integers(0, 4, 150); lab[0] = 9                          # one lone label: not a query
    e = rng.normal(size=(150, 8)) + lab[:, None] * 0.4
    rec, ap = _loop_retrieval(e, lab, (1, 3, 10))
    m = retrieval_metrics(e, lab, ks=(1, 3, 10), n_boot=100).set_index('metric')
    for k in (1, 3, 10): assert m.loc[f'recall@{k}', 'value'] == pytest.approx(rec[k])
    assert m.loc['map@r', 'value'] == pytest.approx(ap) and m.loc['map@r', 'n'] == 149
    for dist, pml in (('euclidean', LpDistance(normalize_embeddings=False)), ('cosine', CosineSimilarity())):
        ac = AccuracyCalculator(include=('precision_at_1', 'mean_average_precision_at_r'), k='max_bin_count',
                                knn_func=CustomKNN(pml), device=torch.device('cpu'))
        ref = ac.get_accuracy(torch.tensor(e, dtype=torch.float32), torch.tensor(lab))
        per = retrieval_scores(e, lab, ks=(1,), distance=dist, block=37)   # blocks of queries: same result
        assert per['recall@1'].mean() == pytest.approx(ref['precision_at_1'], abs=1e-9)
        assert per['map@r'].mean() == pytest.approx(ref['mean_average_precision_at_r'], abs=1e-9)

def test_errors():
    with pytest.raises(MetricError, match='differ in shape'): bootstrap_metrics(np.ones(3), np.ones(4))
    with pytest.raises(MetricError, match='non-finite'): bootstrap_metrics(np.r_[0, 1, 0.], np.r_[0, np.nan, 1])
    with pytest.raises(MetricError, match='unknown metric'): metric_values(np.r_[0, 1.], np.r_[0, 1.], 'f1')
    with pytest.raises(MetricError, match='distance'): retrieval_scores(np.ones((3, 2)), [0, 0, 1], distance='dtw')
    assert set(METRICS) == {'auroc', 'auprc', 'mae', 'rmse', 'pearson_r', 'r2'}
