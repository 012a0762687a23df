"""Pairwise distances and DTW: every metric against brute-force loops written here, DTW against dtaidistance and a
textbook DP on real PTB-XL ECGs, soft-DTW limits, gradients, blocks, backends; device from $ECG_DML_DEVICE"""
import math
import numpy as np, pytest, torch
from ecg_dml.core import get_device, sample_dir
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.wfdb import read_record
from ecg_dml.metric.distances import (DISTANCES, DistanceError, pairwise_distances, register_distance, sqrt0,
                                      euclidean_distances)
from ecg_dml.metric.dtw import band_radius, downsample, dtw_distances, soft_dtw, _backend, _threads

DEV = get_device()
VECTOR = ['euclidean', 'sqeuclidean', 'l1', 'mae', 'cosine', 'correlation']

# ---------------------------------------------------------------- brute-force references (float64 numpy, per pair)
def _corr(u, v):
    u, v = u - u.mean(), v - v.mean()
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))

def ref_pair(metric, a, b, **kw):
    "One distance between two ECGs a, b [leads, T] (or [D]) the slow, obvious way"
    u, v = a.ravel(), b.ravel()
    if metric == 'euclidean': return math.sqrt(sum((p - q)**2 for p, q in zip(u, v)))
    if metric == 'sqeuclidean': return float(((u - v)**2).sum())
    if metric == 'l1': return float(np.abs(u - v).sum())
    if metric == 'mae': return float(np.abs(u - v).sum() / u.size)
    if metric == 'cosine':
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        return 1.0 - (0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv)))
    if metric == 'correlation':
        if kw.get('per_lead', True) and a.ndim == 2: return 1.0 - float(np.mean([_corr(p, q) for p, q in zip(a, b)]))
        return 1.0 - _corr(u, v)
    raise KeyError(metric)

def ref_matrix(metric, x, y=None, **kw):
    x = x.detach().cpu().double().numpy(); y = x if y is None else y.detach().cpu().double().numpy()
    return np.array([[ref_pair(metric, a, b, **kw) for b in y] for a in x])

def dp_dtw(a, b, r=None, gamma=None):
    "Accumulated (soft-)DTW cost of a [L, n], b [L, m] by the double loop over the grid (dtaidistance's band rule)"
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n, m = a.shape[1], b.shape[1]
    R = np.full((n + 1, m + 1), np.inf); R[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if r is not None and not -r - max(0, n - m) <= j - i <= r + max(0, m - n): continue
            prev = np.array([R[i-1, j], R[i, j-1], R[i-1, j-1]])
            if gamma is None: soft = prev.min()
            else:
                fin = prev[np.isfinite(prev)]
                mn = fin.min(); soft = mn - gamma * np.log(np.exp(-(fin - mn) / gamma).sum())
            R[i, j] = ((a[:, i-1] - b[:, j-1])**2).sum() + soft
    return R[n, m]

# ---------------------------------------------------------------- data
@pytest.fixture(scope='module')
def real():
    "24 real PTB-XL ECGs of the bundled sample, 12 x 1000 at 100 Hz (mV), on DEV"
    paths = ptbxl_index(sample_dir()).path.iloc[:24]
    return torch.from_numpy(np.stack([read_record(p).signal for p in paths])).to(DEV)

def _inputs(src, real, dtype, T=200):
    g = torch.Generator().manual_seed(7)
    if src == 'random': x = torch.randn(7, 3, 40, generator=g, dtype=torch.float64)
    else: x = real[:7, :, :T].cpu().double()
    return x.to(DEV, dtype)

# ---------------------------------------------------------------- vector metrics
@pytest.mark.parametrize('metric', VECTOR)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('src', ['random', 'real'])
def test_vector_metric_vs_loop(metric, dtype, src, real):
    x = _inputs(src, real, dtype)
    xa, ya = x[:4], x[4:]
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    d = pairwise_distances(xa, ya, metric)
    assert d.dtype == dtype and d.device.type == DEV.type and d.shape == (4, 3)
    np.testing.assert_allclose(d.cpu().double().numpy(), ref_matrix(metric, xa, ya), **tol)
    ds = pairwise_distances(x, metric=metric)
    ref = ref_matrix(metric, x)
    np.testing.assert_allclose(ds.cpu().double().numpy(), ref, **tol)
    assert torch.equal(ds, ds.T) and (ds.diagonal() == 0).all() and (ds >= 0).all()

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_correlation_flat_and_embeddings(dtype, real):
    x = real[:6, :, :300].to(dtype)
    np.testing.assert_allclose(pairwise_distances(x, metric='correlation', per_lead=False).cpu().double().numpy(),
                               ref_matrix('correlation', x, per_lead=False), rtol=1e-4, atol=1e-4)
    e = torch.randn(5, 16, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(DEV)   # embeddings [B, D]
    for m in VECTOR:
        np.testing.assert_allclose(pairwise_distances(e, e[:2], m).cpu().double().numpy(), ref_matrix(m, e, e[:2]),
                                   rtol=1e-4, atol=1e-4)

def test_large_batch_matches_exact(real):
    "The B = 256/1024 benchmark path: matrix-product Euclidean against exact differences, float32 on real ECGs"
    x = torch.cat([real.roll(s, -1) for s in range(0, 500, 50)])     # 240 real ECGs
    d = euclidean_distances(x)
    ref = torch.cdist(x.double().flatten(1)[None], x.double().flatten(1)[None],
                      compute_mode='donot_use_mm_for_euclid_dist')[0]
    assert (d.double() - ref).abs().max() < 1e-4 * ref.max()
    assert (d.diagonal() == 0).all() and torch.equal(d, d.T)
    l1 = pairwise_distances(x[:100], metric='l1'); assert torch.equal(l1, l1.T)

def test_identical_rows_give_zero_distance_and_finite_gradient(real):
    x = real[:3, :, :100].double().clone()
    x = torch.cat([x, x[:1]]).requires_grad_()       # row 3 duplicates row 0
    for m in VECTOR + ['dtw']:
        d = pairwise_distances(x, metric=m)
        assert d[0, 3].abs() < 1e-6, m
        d.sum().backward(); assert torch.isfinite(x.grad).all(), m; x.grad = None

@pytest.mark.parametrize('metric', VECTOR + ['dtw', 'softdtw'])
def test_gradcheck(metric):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 7, dtype=torch.float64, generator=g).to(DEV).requires_grad_()
    y = torch.randn(2, 2, 6 if metric in ('dtw', 'softdtw') else 7, dtype=torch.float64, generator=g).to(DEV)
    kw = dict(band=None) if metric == 'dtw' else dict(gamma=0.5) if metric == 'softdtw' else {}
    assert torch.autograd.gradcheck(lambda a: pairwise_distances(a, y, metric, **kw), (x,))
    assert torch.autograd.gradcheck(lambda a: pairwise_distances(a, metric=metric, **kw), (x,))

def test_errors_and_registry(real):
    x = real[:3]
    with pytest.raises(DistanceError, match='unknown distance'): pairwise_distances(x, metric='euclid')
    with pytest.raises(DistanceError, match='float32 or float64'): pairwise_distances(x.half())
    with pytest.raises(DistanceError, match='differ in dtype'): pairwise_distances(x, x.double())
    with pytest.raises(DistanceError, match='per-sample shape'): pairwise_distances(x, x[:, :, :500])
    with pytest.raises(DistanceError, match='already registered'): register_distance('l1', lambda x, y=None: x)
    with pytest.raises(DistanceError, match='leads'): dtw_distances(x, x[:, :6])
    with pytest.raises(DistanceError, match=r'\[0, 1\]'): dtw_distances(x, band=1.5)
    with pytest.raises(DistanceError, match='backend'): dtw_distances(x, backend='numba')
    with pytest.raises(DistanceError, match='gamma'): soft_dtw(x, gamma=0)
    try:
        @register_distance('_chebyshev')
        def cheb(x, y=None):
            y = x if y is None else y
            return (x.flatten(1)[:, None] - y.flatten(1)[None]).abs().amax(-1)
        d = pairwise_distances(x, metric='_chebyshev')
        assert torch.allclose(d[0, 1], (x[0] - x[1]).abs().max())
        register_distance('_bad', lambda x, y=None: x.sum())
        with pytest.raises(DistanceError, match='expected a tensor'): pairwise_distances(x, metric='_bad')
    finally:
        DISTANCES.pop('_chebyshev', None); DISTANCES.pop('_bad', None)
    assert {'dtw', 'softdtw'} <= set(DISTANCES)

def test_sqrt0():
    t = torch.tensor([0., 4., 1e-30], dtype=torch.float64, requires_grad=True)
    s = sqrt0(t); s.sum().backward()
    assert s.tolist() == [0., 2., 1e-15] and t.grad[0] == 0 and torch.isfinite(t.grad).all()

# ---------------------------------------------------------------- DTW
@pytest.mark.parametrize('n,m,r', [(9, 9, None), (9, 9, 0), (9, 9, 2), (11, 7, 1), (6, 10, 3), (1, 5, None),
                                   (5, 1, 0), (1, 1, None), (12, 12, 20)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_dtw_vs_python_dp(n, m, r, dtype):
    g = torch.Generator().manual_seed(n * 100 + m)
    x, y = torch.randn(3, 4, n, generator=g, dtype=dtype).to(DEV), torch.randn(2, 4, m, generator=g, dtype=dtype).to(DEV)
    ref = np.sqrt([[dp_dtw(a, b, r) for b in y.cpu().numpy()] for a in x.cpu().numpy()])
    d = dtw_distances(x, y, band=r, backend='torch')
    assert d.dtype == dtype
    np.testing.assert_allclose(d.cpu().double().numpy(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-5)

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_dtw_vs_python_dp_real(dtype, real):
    "Real ECGs average-pooled to 5 Hz (T = 50), 10 % band, x vs y and x vs itself"
    x = downsample(real[:6], step=20).to(dtype)
    ref = np.sqrt([[dp_dtw(a, b, 5) for b in x.cpu().numpy()] for a in x.cpu().numpy()])
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dtw_distances(x, band=0.1, backend='torch').cpu().double().numpy(), ref, **tol)
    np.testing.assert_allclose(dtw_distances(x[:2], x[2:], band=0.1, backend='torch').cpu().double().numpy(),
                               ref[:2, 2:], **tol)

@pytest.mark.parametrize('band', [0, 0.02, 0.1, 0.3, None])
def test_dtw_vs_dtaidistance_real(band, real):
    "Real ECGs at 50 Hz against dtaidistance.dtw_ndim.distance (window = r + 1), float64 exact, float32 to 1e-4"
    dtw_ndim = pytest.importorskip('dtaidistance.dtw_ndim')
    x = downsample(real[:10], fs=100, target_fs=50)
    r = band_radius(band, 500)
    s = [np.ascontiguousarray(e.T, dtype=np.float64) for e in x.cpu().numpy()]
    ref = np.array([[dtw_ndim.distance(a, b, window=None if r is None else r + 1, use_c=True) for b in s] for a in s])
    d64 = dtw_distances(x.double(), band=band, backend='torch').cpu().numpy()
    np.testing.assert_allclose(d64, ref, rtol=1e-10, atol=1e-9)
    d32 = dtw_distances(x, band=band, backend='torch').cpu().double().numpy()
    np.testing.assert_allclose(d32, ref, rtol=1e-4, atol=1e-4 * ref.max())
    dxy = dtw_distances(x[:3], x[3:], band=band, backend='torch').cpu().double().numpy()
    np.testing.assert_allclose(dxy, ref[:3, 3:], rtol=1e-4, atol=1e-4 * ref.max())
    dd = dtw_distances(x[:3], x[3:], band=band, backend='dtaidistance')
    assert dd.dtype == torch.float32 and dd.device.type == DEV.type
    np.testing.assert_allclose(dd.cpu().double().numpy(), ref[:3, 3:], rtol=1e-6)

def test_dtw_unequal_lengths_vs_dtaidistance(real):
    dtw_ndim = pytest.importorskip('dtaidistance.dtw_ndim')
    x, y = downsample(real[:3], step=4).double(), downsample(real[3:5, :, :880], step=4).double()   # T = 250 / 220
    s = lambda t: [np.ascontiguousarray(e.T) for e in t.cpu().numpy()]
    for band in (10, 0.05, None):
        r = band_radius(band, 250, 220)
        ref = np.array([[dtw_ndim.distance(a, b, window=None if r is None else r + 1, use_c=True) for b in s(y)]
                        for a in s(x)])
        np.testing.assert_allclose(dtw_distances(x, y, band=band, backend='torch').cpu().numpy(), ref, rtol=1e-10)
        np.testing.assert_allclose(dtw_distances(x, y, band=band, backend='dtaidistance').cpu().numpy(), ref,
                                   rtol=1e-10)

def test_dtw_properties(real):
    x = downsample(real[:8], fs=100, target_fs=25).double()            # T = 250
    full, none = dtw_distances(x, band=1.0), dtw_distances(x, band=None)
    assert torch.allclose(full, none, rtol=1e-12, atol=0)               # band = full length is unconstrained
    assert torch.allclose(dtw_distances(x, band=x.shape[-1] + 5), none, rtol=1e-12, atol=0)
    assert torch.allclose(dtw_distances(x, band=0), euclidean_distances(x), rtol=1e-10)   # r = 0: Euclidean
    ds = [dtw_distances(x, band=b) for b in (0, 1, 0.05, 0.2, None)]
    assert all((b <= a * (1 + 1e-12)).all() for a, b in zip(ds, ds[1:]))   # wider band, smaller DTW
    for d in ds: assert torch.equal(d, d.T) and (d.diagonal() == 0).all()
    xy, yx = dtw_distances(x[:3], x[3:], band=0.1), dtw_distances(x[3:], x[:3], band=0.1)
    assert torch.allclose(xy, yx.T, rtol=1e-12)                         # DTW(a, b) = DTW(b, a)
    # x against itself, through pairwise_distances and with downsampling inside
    d = pairwise_distances(real[:8], metric='dtw', band=0.1, fs=100, target_fs=25)
    assert d.shape == (8, 8) and d.dtype == torch.float32
    assert torch.allclose(d.double(), dtw_distances(x, band=0.1), rtol=1e-4, atol=1e-4)

def test_dtw_blocks_equal_one_block(real):
    "Blocks of pairs (the B = 1024 path): same matrix as one block, x vs itself (mirrored) and x vs y"
    x = downsample(real, step=4)                                        # 24 ECGs, T = 250
    one = dtw_distances(x, band=0.1, backend='torch', max_pairs=10**6)
    for mp in (1, 30, 64):
        assert torch.allclose(dtw_distances(x, band=0.1, backend='torch', max_pairs=mp), one, rtol=1e-5, atol=1e-5)
    xy = dtw_distances(x[:10], x[10:], band=0.1, backend='torch', max_pairs=16)
    assert torch.allclose(xy, one[:10, 10:], rtol=1e-5, atol=1e-5)

def test_backends_and_threads(real):
    x = downsample(real[:20], step=2)
    assert _backend('auto', x[:8], None, 500, 50) == ('dtaidistance' if DEV.type == 'cpu' else 'torch')
    assert _backend('auto', x, None, 500, 50) == 'torch'
    assert _backend('auto', x[:8].clone().requires_grad_(), None, 500, 50) == 'torch'
    n = torch.get_num_threads()
    with _threads(torch.device('cpu'), 1): assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
    a = dtw_distances(x[:6], cpu_threads=None, backend='torch'); b = dtw_distances(x[:6], backend='torch')
    assert torch.allclose(a, b, rtol=1e-6) and torch.get_num_threads() == n

def test_downsample(real):
    x = real[:2]
    assert torch.allclose(downsample(x, fs=100, target_fs=50), x.reshape(2, 12, 500, 2).mean(-1), atol=1e-6)
    assert downsample(x, fs=100, target_fs=40).shape[-1] == 400          # non-integer ratio: adaptive pooling
    assert downsample(x) is x
    with pytest.raises(DistanceError, match='no upsampling'): downsample(x, fs=100, target_fs=200)
    with pytest.raises(DistanceError, match='not both'): downsample(x, step=2, fs=100, target_fs=50)
    assert band_radius(0.1, 500) == 50 and band_radius(3, 500) == 3 and band_radius(None, 9) is None

# ---------------------------------------------------------------- soft-DTW
def test_soft_dtw_vs_python_dp():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(3, 2, 6, generator=g, dtype=torch.float64), torch.randn(2, 2, 8, generator=g, dtype=torch.float64)
    for gamma, r in [(1.0, None), (0.1, None), (0.3, 2)]:
        ref = np.array([[dp_dtw(a, b, r, gamma) for b in y.numpy()] for a in x.numpy()])
        np.testing.assert_allclose(soft_dtw(x.to(DEV), y.to(DEV), gamma=gamma, band=r).cpu().numpy(), ref, rtol=1e-10)
        sxx = np.array([dp_dtw(a, a, r, gamma) for a in x.numpy()])
        syy = np.array([dp_dtw(b, b, r, gamma) for b in y.numpy()])
        div = np.maximum(ref - (sxx[:, None] + syy[None]) / 2, 0)
        np.testing.assert_allclose(soft_dtw(x.to(DEV), y.to(DEV), gamma=gamma, band=r, divergence=True).cpu().numpy(),
                                   div, rtol=1e-9, atol=1e-12)

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_soft_dtw_tends_to_dtw(dtype, real):
    x = downsample(real[:5], step=10).to(dtype)                         # real ECGs at 10 Hz, T = 100
    acc = dtw_distances(x, x, band=0.2, backend='torch').double()**2    # accumulated DTW cost (x vs y form: no zeroing)
    tol, errs = (1e-4 if dtype == torch.float32 else 1e-10) * acc.max().item(), []
    for gamma in (1.0, 0.1, 0.01, 0.001, 1e-4):
        gap = acc - soft_dtw(x, x, gamma=gamma, band=0.2).double()
        # each soft minimum is within gamma*log(3) below the min; a path has at most n + m - 1 cells
        assert (gap >= -tol).all() and (gap <= gamma * math.log(3) * (2 * x.shape[-1] - 1) + tol).all()
        errs.append(gap.abs().max().item())
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-3 * acc.max().item()
    dv = pairwise_distances(x, metric='softdtw', gamma=0.1, band=0.2)
    assert (dv.diagonal() == 0).all() and (dv >= 0).all() and torch.equal(dv, dv.T)

def test_soft_dtw_gradients_finite_on_real(real):
    x = downsample(real[:4], step=10).double().requires_grad_()
    soft_dtw(x, gamma=0.1, band=0.1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
