"Handcrafted features: equal to a brute-force per-record computation (plain loops over samples and leads) on real PTB-XL ECGs; a flat record has NaN beat features and filled signal statistics; a store gives the same features as its arrays; the feature names are stable"
import math
import numpy as np, pandas as pd, pytest, wfdb
from scipy import stats
from ecg_dml.core import LEADS, LEADS8
from ecg_dml.data.beats import BeatConfig, beat_templates
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.store import build_store
from ecg_dml.evaluate.features import FeatureConfig, feature_names, feature_matrix, handcrafted_features

N_REAL = 80   # real records checked one by one

def _grad(m, h=1):
    "Change per sample: the difference over ±h samples (the ends repeated)"
    W = len(m)
    return [(m[min(i + h, W - 1)] - m[max(i - h, 0)]) / (2 * h) for i in range(W)]

def _argmax(vals, idxs):
    "The first index of `idxs` with the largest value"
    best = None
    for i in idxs:
        if best is None or vals[i] > vals[best]: best = i
    return best

def brute_force(x, t, rr, rr_sd, fs=100., r=25, fc=FeatureConfig()):
    "One record's features from the written rules, sample by sample: raw ECG x [12, T], template t [12, W] (mV), RR in s"
    nan = float('nan')
    t = [[float(v) for v in row] for row in t]; W = len(t[0]); L = len(t)
    ind = [LEADS.index(l) for l in LEADS8]
    f = {'HR': 60 / rr, 'RR_median': rr * 1000, 'RR_sd': rr_sd * 1000}
    # spatial velocity over the independent leads
    h, k, reach = max(1, round(0.01 * fs)), max(1, round(fc.quiet * fs)), round(fc.qrs_reach * fs)
    grads = [_grad(t[l], h) for l in ind]
    v = [math.sqrt(sum(g[i] ** 2 for g in grads)) * fs for i in range(W)]
    top = _argmax(v, range(r + round(fc.qrs_search[0] * fs), r + round(fc.qrs_search[1] * fs) + 1))
    thr = fc.qrs_frac * v[top]
    on = nan
    for i in range(top - 1, max(top - reach, 0) - 1, -1):
        if i - k + 1 >= 0 and all(v[j] < thr for j in range(i - k + 1, i + 1)):
            on = i + (thr - v[i]) / (v[i + 1] - v[i]); break
    off = nan
    for j in range(top + 1, min(top + reach, W - 1) + 1):
        if j + k - 1 <= W - 1 and all(v[q] < thr for q in range(j, j + k)):
            off = j - 1 + (v[j - 1] - thr) / (v[j - 1] - v[j]); break
    on_a = on if not math.isnan(on) else top + fc.fallback[0] * fs
    off_a = off if not math.isnan(off) else top + fc.fallback[1] * fs
    # baseline: mean of the PR segment
    hi = min(max(math.floor(on_a + fc.pr_segment[1] * fs), 0), W - 1)
    lo = min(min(max(math.ceil(on_a + fc.pr_segment[0] * fs), 0), W - 1), hi)
    b = [[t[l][i] - sum(t[l][lo:hi + 1]) / (hi + 1 - lo) for i in range(W)] for l in range(L)]
    qrs = [i for i in range(W) if math.ceil(on_a) <= i <= math.floor(off_a)]
    R, Q, S, ST, area = [], [], [], [], []
    for l in range(L):
        ri = _argmax(b[l], qrs)
        R.append(max(0., b[l][ri]))
        Q.append(min([0.] + [b[l][i] for i in qrs if i < ri]))
        S.append(min([0.] + [b[l][i] for i in qrs if i > ri]))
        area.append(sum(b[l][i] for i in qrs))
        p = off_a + fc.st_offset * fs
        i0 = min(math.floor(p), W - 2)
        ST.append(b[l][i0] * (1 - (p - i0)) + b[l][i0 + 1] * (p - i0) if 0 <= p <= W - 1 else nan)
    # RMS over the independent leads; T end by the tangent at the steepest descent after the T peak
    m = [math.sqrt(sum(b[l][i] ** 2 for l in ind) / len(ind)) for i in range(W)]
    dm = _grad(m, h)
    ts = math.ceil(off_a + fc.t_start * fs)
    stop = min(W - 1, math.floor(r + fc.t_stop * rr * fs)) if not math.isnan(rr) else W - 1
    tend, T = nan, [nan] * L
    if ts <= stop:
        tp = _argmax(m, range(ts, stop + 1))
        fall = next((i for i in range(tp + 1, W) if m[i] <= fc.t_fall * m[tp]), W - 1)
        i = _argmax([-d for d in dm], range(tp, fall + 1))
        if dm[i] < 0 and tp < stop and m[tp] >= fc.t_min:
            e = i - m[i] / dm[i]
            if e <= W - 1: tend = e
        last = math.floor(tend) if not math.isnan(tend) else stop
        for l in range(L):
            ti = _argmax([abs(u) for u in b[l]], range(ts, last + 1))
            T[l] = b[l][ti]
    # P onset by the tangent at the steepest ascent before the P peak
    pon, pe = nan, math.floor(on_a - fc.p_gap * fs)
    if pe >= 0:
        pp = _argmax(m, range(0, pe + 1))
        p0 = _argmax([-u for u in m], range(0, pp + 1))
        i = _argmax(dm, range(p0, pp + 1))
        if dm[i] > 0 and pp > 0 and m[pp] >= fc.p_min and m[p0] <= fc.p_valley * m[pp]:
            e = i - m[i] / dm[i]
            if e >= 0: pon = e
    ms = lambda s: (s - r) / fs * 1000
    f['PR'] = ms(on) - ms(pon); f['QRS_dur'] = ms(off) - ms(on); f['QT'] = ms(tend) - ms(on)
    f['QTc'] = f['QT'] / math.sqrt(rr)
    I, aVF = LEADS.index('I'), LEADS.index('aVF')
    f['QRS_axis'] = math.degrees(math.atan2(2 / math.sqrt(3) * area[aVF], area[I]))
    f['T_axis'] = math.degrees(math.atan2(2 / math.sqrt(3) * T[aVF], T[I])) if not math.isnan(T[I]) else nan
    for name, vals in [('R_amp', R), ('Q_amp', Q), ('S_amp', S), ('ST60', ST), ('T_amp', T)]:
        for l, lead in enumerate(LEADS): f[f'{lead}_{name}'] = vals[l]
    for l, lead in enumerate(LEADS):
        s = np.asarray(x[l], np.float64)
        flat = s.max() == s.min()
        f.update({f'{lead}_std': float(np.std(s)), f'{lead}_min': float(s.min()), f'{lead}_max': float(s.max()),
                  f'{lead}_p5': float(np.percentile(s, 5)), f'{lead}_p95': float(np.percentile(s, 95)),
                  f'{lead}_skew': 0. if flat else float(stats.skew(s)), f'{lead}_kurt': 0. if flat else float(stats.kurtosis(s))})
    return f

@pytest.fixture(scope='module')
def real(shared):
    "The first N_REAL shared PTB-XL records (100 Hz, mV), their templates and beat table"
    c = shared/'ptbxl'/'compact'
    x = np.load(c/'X100_int16_uV.npy')[:N_REAL].transpose(0, 2, 1).astype(np.float32) / 1000
    t, tab = beat_templates(x, 100.)
    return x, t, tab

def test_features_equal_brute_force_on_real_ecgs(real):
    x, t, tab = real
    F = handcrafted_features(x, 100., t, tab, bs=32)
    assert list(F.columns) == feature_names() and len(F) == N_REAL
    for i in range(N_REAL):
        want = brute_force(x[i], t[i], tab.rr_median[i], tab.rr_sd[i])
        got = F.iloc[i]
        for col in F.columns:
            np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=f'record {i}: {col}')
    # the records exercise the rules: most have every interval, and some miss one
    assert F[['PR', 'QRS_dur', 'QT']].notna().all(1).mean() > 0.6 and F.PR.isna().any()

def test_features_equal_brute_force_at_500_hz(shared):
    "The rules scale with the rate (slopes over ±10 ms, windows in seconds): the same brute force at 500 Hz"
    idx = ptbxl_index(shared/'ptbxl', fs=500, drop_missing=True).iloc[:12]
    x = np.stack([wfdb.rdsamp(p)[0].T for p in idx.path]).astype(np.float32)
    t, tab = beat_templates(x, 500.)
    F = handcrafted_features(x, 500., t, tab)
    for i in range(len(x)):
        want = brute_force(x[i], t[i], tab.rr_median[i], tab.rr_sd[i], fs=500., r=125)
        for col in F.columns:
            np.testing.assert_allclose(F.iloc[i][col], want[col], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=f'record {i}: {col}')
    assert F.QRS_dur.notna().all()

def test_features_computed_from_the_ecgs_equal_given_templates(real):
    x, t, tab = real
    pd.testing.assert_frame_equal(handcrafted_features(x[:10], 100.), handcrafted_features(x[:10], 100., t[:10], tab.iloc[:10]))
    one = handcrafted_features(x[3], 100.)                       # one ECG [leads, T]
    pd.testing.assert_frame_equal(one, handcrafted_features(x, 100., t, tab).iloc[[3]].reset_index(drop=True))

def test_flat_record_has_nan_beat_features_and_filled_statistics(real):
    x, _, _ = real
    flat = np.zeros((2, 12, 1000), np.float32); flat[1] = x[0]
    flat[1, LEADS.index('V3')] = 0.2                              # one disconnected (constant) lead in a real ECG
    F = handcrafted_features(flat, 100.)
    sig = [f'{l}_{s}' for s in ('std', 'min', 'max', 'p5', 'p95', 'skew', 'kurt') for l in LEADS]
    rest = [c for c in F.columns if c not in sig]
    assert F.loc[0, rest].isna().all() and (F.loc[0, sig] == 0).all()
    assert F.loc[1].notna().all()
    assert F.loc[1, ['V3_std', 'V3_skew', 'V3_kurt']].tolist() == [0, 0, 0] and F.loc[1, 'V3_min'] == pytest.approx(0.2)
    with pytest.raises(ValueError, match='both'): handcrafted_features(x, 100., templates=np.zeros((len(x), 12, 70)))
    with pytest.raises(ValueError, match='sampling rate'): handcrafted_features(x)

def test_feature_names_are_stable():
    n = feature_names()
    assert len(n) == 153
    assert n[:9] == ['HR', 'RR_median', 'RR_sd', 'PR', 'QRS_dur', 'QT', 'QTc', 'QRS_axis', 'T_axis']
    assert n[9:12] == ['I_R_amp', 'II_R_amp', 'III_R_amp'] and n[20] == 'V6_R_amp' and n[21] == 'I_Q_amp'
    assert n[9 + 12 * 3 + 1] == 'II_ST60' and n[9 + 12 * 4 + 6] == 'V1_T_amp'
    assert n[9 + 12 * 5] == 'I_std' and n[-1] == 'V6_kurt' and n[-13] == 'V6_skew'
    assert feature_names(('I', 'II'))[9:13] == ['I_R_amp', 'II_R_amp', 'I_Q_amp', 'II_Q_amp']

def test_store_gives_the_features_of_its_arrays(shared, tmp_path):
    idx = ptbxl_index(shared/'ptbxl', fs=100).iloc[:40]
    with_beats = build_store(idx, tmp_path/'a', shard_size=16, n_workers=0, progress=False, beats=True)
    without = build_store(idx, tmp_path/'b', shard_size=16, n_workers=0, progress=False)
    x = with_beats.get_batch(np.arange(len(with_beats)))
    want = handcrafted_features(x, 100.)
    pd.testing.assert_frame_equal(handcrafted_features(with_beats, bs=7), want)      # the stored templates, read in batches
    pd.testing.assert_frame_equal(handcrafted_features(without, bs=16), want)        # templates computed on the way

def test_feature_matrix_imputes_with_training_medians():
    df = pd.DataFrame({'a': [1., np.nan, 5., 100.], 'b': [np.nan, np.nan, np.nan, 7.]})
    X = feature_matrix(df, train_rows=[0, 1, 2])
    np.testing.assert_array_equal(X, [[1, 0, 0, 1], [3, 0, 1, 1], [5, 0, 0, 1], [100, 7, 0, 0]])   # b: no training value -> 0
    assert feature_matrix(df, indicators=False).shape == (4, 2) and not np.isnan(feature_matrix(df)).any()
