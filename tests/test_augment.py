"Batch augmentations, the 3KG VCG transform and the view pipelines, on real PTB-XL ECGs of the bundled sample"
import math
import numpy as np, pandas as pd, pytest, torch, wfdb
from ecg_dml.core import LEADS, LEADS8, make_generator, sample_dir
from ecg_dml.augment.core import (AmplitudeScale, AugmentError, BaselineWander, Compose, EMGNoise, GaussianNoise,
                                   LeadDropout, PowerlineNoise, RandomCrop, RandomResizedCrop, SignFlip, TimeMask,
                                   TimeReverse, TimeShift, interp_time)
from ecg_dml.augment.vcg import (ThreeKG, complete_leads, dower_matrices, ecg_to_vcg, leads8, random_axis_scales,
                                  random_rotations, vcg_to_ecg)
from ecg_dml.views import (LeadViews, MultiView, SegmentViews, clocs_leads, clocs_segments, flatten_views,
                           simclr_views, threekg_views)

FS = 100.
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

def _read(files): return torch.from_numpy(np.stack([wfdb.rdsamp(str(sample_dir()/f))[0].T for f in files]).astype(np.float32))

@pytest.fixture(scope='module')
def x():
    "64 real 12-lead ECGs, 10 s at 100 Hz, mV"
    db = pd.read_csv(sample_dir()/'ptbxl_database.csv', index_col='ecg_id')
    return _read(db.filename_lr[:64])

@pytest.fixture(scope='module')
def x500():
    "the real 500 Hz records of the sample"
    return _read(sorted(str(p.relative_to(sample_dir()).with_suffix('')) for p in (sample_dir()/'records500').rglob('*.hea')))

def all_augs():
    "every augmentation at its default magnitude, with p = 1 where p has a default below 1"
    return [RandomCrop(2.5), RandomResizedCrop(), TimeShift(), GaussianNoise(), BaselineWander(), PowerlineNoise(),
            EMGNoise(), AmplitudeScale(), SignFlip(p=1.), TimeReverse(p=1.), TimeMask(), TimeMask((0.1, 0.4), per_lead=False),
            LeadDropout(), ThreeKG(), ThreeKG(keep_residual=True)]

IDENTITY = [RandomCrop(10.), RandomResizedCrop(0.), TimeShift(0.), GaussianNoise(0.), BaselineWander(0.),
            PowerlineNoise(0.), EMGNoise(0.), AmplitudeScale(0.), AmplitudeScale(0., per_lead=True), SignFlip(p=0.),
            TimeReverse(p=0.), TimeMask(0.), TimeMask(0., per_lead=False), LeadDropout(0.)]

@pytest.mark.parametrize('aug', IDENTITY, ids=repr)
def test_identity_at_magnitude_zero(x, aug):
    y = aug(x, FS, 0)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()

def test_3kg_identity_at_angle0_scale1(x):
    assert torch.equal(ThreeKG(0., 1., keep_residual=True)(leads8(x), FS, 0), leads8(x))   # exact on the 8 leads
    assert (ThreeKG(0., 1., keep_residual=True)(x, FS, 0) - x).abs().max() < 2e-3          # limb leads recomputed (1 µV data)
    # the published 3KG at angle 0, scale 1 is the Dower projection of the input, not the input
    assert torch.allclose(ThreeKG(0., 1.)(x, FS, 0), vcg_to_ecg(ecg_to_vcg(x)), atol=1e-5)

@pytest.mark.parametrize('aug', [a for a in all_augs() if not isinstance(a, RandomCrop)], ids=repr)
def test_p_zero_keeps_every_sample(x, aug):
    aug.p = 0.
    assert torch.equal(aug(x, FS, 0), x)

def test_p_half_picks_some_samples(x):
    changed = (GaussianNoise(0.1, p=0.5)(x, FS, 0) != x).any(-1).any(-1)
    assert 16 < changed.sum() < 48
    crop = RandomCrop(2.5, p=0.)(x, FS, 0)
    assert torch.equal(crop, x[..., 375:625])                                  # unpicked samples: the centre window

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('aug', all_augs(), ids=repr)
def test_shape_dtype_finite_not_in_place(x, aug, dtype):
    xd = x.to(dtype); x0 = xd.clone()
    y = aug(xd, FS, 1)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert y.shape == ((64, 12, 250) if isinstance(aug, RandomCrop) else xd.shape)
    assert torch.equal(xd, x0)
    assert not torch.equal(y, xd)

@pytest.mark.parametrize('aug', all_augs(), ids=repr)
def test_seeded(x, aug):
    a, b = aug(x, FS, 3), aug(x, FS, make_generator(3))
    assert torch.equal(a, b)
    if not isinstance(aug, (SignFlip, TimeReverse)): assert not torch.equal(a, aug(x, FS, 4))

def test_batch_of_one_and_pipeline(x):
    pipe = Compose(RandomResizedCrop(), TimeMask((0., 0.5), per_lead=False), GaussianNoise(), BaselineWander(),
                   PowerlineNoise(p=0.5), EMGNoise(p=0.5), AmplitudeScale(), LeadDropout(0.1), ThreeKG())
    assert pipe(x[:1], FS, 0).shape == (1, 12, 1000)
    assert torch.equal(pipe(x, FS, 0), pipe(x, FS, 0))
    assert torch.equal(Compose()(x, FS), x)

def test_errors(x):
    with pytest.raises(AugmentError, match=r'\[B, leads, T\]'): GaussianNoise()(x[0], FS)
    with pytest.raises(AugmentError, match='int64'): GaussianNoise()(x.long(), FS)
    with pytest.raises(AugmentError, match='1200 samples'): RandomCrop(12.)(x, FS)
    with pytest.raises(AugmentError, match='Nyquist'): EMGNoise(min_freq=60.)(x, FS)
    with pytest.raises(AugmentError, match='not a probability'): GaussianNoise(p=1.5)
    with pytest.raises(AugmentError, match='fraction'): TimeMask((0.5, 0.2))
    with pytest.raises(AugmentError, match='fs=0'): GaussianNoise()(x, 0)
    with pytest.raises(AugmentError, match='int seed'): GaussianNoise()(x, FS, 'seed')
    with pytest.raises(AugmentError, match='got 6'): ThreeKG()(x[:, :6], FS)

# ---- what each augmentation does

def test_crops_and_shift(x):
    y = RandomCrop(2.5)(x, FS, 0)
    starts = [next(s for s in range(751) if torch.equal(x[i, :, s:s + 250], y[i])) for i in range(16)]
    assert len(set(starts)) > 4
    ramp = torch.arange(1000.).expand(8, 12, 1000).contiguous()
    r = RandomResizedCrop(0.5)(ramp, FS, 0)                                   # output = source positions
    step = r.diff(dim=-1)
    assert torch.allclose(step, step[..., :1].expand_as(step), atol=1e-3)
    assert ((step[:, 0, 0] >= 0.5 - 1e-4) & (step[:, 0, 0] <= 1 + 1e-4)).all() and r.min() >= 0 and r.max() <= 999
    assert torch.equal(interp_time(ramp, torch.tensor([[0., 2.5, 999.]]).expand(8, 3)), torch.tensor([0., 2.5, 999.]).expand(8, 12, 3))
    s = TimeShift(1.)(ramp + 1, FS, 0)                                         # ramp+1: zeros mark the filled samples
    shift = torch.where(s[:, 0, 0] == 0, (s[:, 0] == 0).sum(-1), -(s[:, 0] == 0).sum(-1))
    assert (shift.abs() <= 100).all() and len(set(shift.tolist())) > 2
    for i in range(8):
        k = int(shift[i]); lo, hi = max(k, 0), 1000 + min(k, 0)
        assert torch.equal(s[i, :, lo:hi], ramp[i, :, lo - k:hi - k] + 1)

def test_noise_levels_and_spectra():
    z = torch.zeros(128, 12, 1000)
    assert abs(float(GaussianNoise(0.1)(z, FS, 0).std()) - 0.1) < 2e-3
    w = BaselineWander(0.2, max_freq=0.5)(z, FS, 0)
    pw = torch.fft.rfft(w * torch.hann_window(1000)).abs()**2
    assert pw[..., 8:].sum() < 1e-4 * pw.sum() and 0.1 < w.abs().max() <= 0.4
    e = EMGNoise(0.05, min_freq=20.)(z, FS, 0)
    pe = torch.fft.rfft(e).abs()**2
    assert pe[..., :180].sum() < 1e-3 * pe.sum() and 0.01 < e.std() < 0.05

def test_powerline_on_real_500hz(x500):
    h = PowerlineNoise(0.05)(x500, 500., 0) - x500
    f = torch.fft.rfftfreq(x500.shape[-1], 1 / 500)[torch.fft.rfft(h).abs().argmax(-1)]
    assert set(f[:, 0].tolist()) <= {50., 60.} and (f == f[:, :1]).all()
    assert h.abs().max() <= 0.05 + 1e-6

def test_scale_flip_reverse(x):
    f = AmplitudeScale(0.5)(torch.ones(256, 12, 4), FS, 0)[..., 0]
    assert (f == f[:, :1]).all() and (f >= 1 / 1.5 - 1e-6).all() and (f <= 1.5 + 1e-6).all()
    assert 0.35 < (f[:, 0] > 1).float().mean() < 0.65                          # log-uniform: as many up as down
    assert torch.equal(SignFlip(p=1.)(x, FS), -x) and torch.equal(TimeReverse(p=1.)(x, FS), x.flip(-1))

def test_masks():
    ones = torch.ones(64, 12, 1000)
    m = TimeMask(0.5)(ones, FS, 0) == 0
    assert (m.sum(-1) == 500).all() and (m.int().diff(dim=-1).abs().sum(-1) <= 2).all() and (m != m[:, :1]).any()
    m = TimeMask((0.1, 0.3), per_lead=False)(ones, FS, 0) == 0
    assert (m == m[:, :1]).all() and m[:, 0].sum(-1).min() >= 100 and m[:, 0].sum(-1).max() <= 300
    d = LeadDropout(0.999)(ones, FS, 0)[..., 0]
    assert (d.sum(1) == 1).all()                                                # never all leads
    frac = (LeadDropout(0.25)(torch.ones(2000, 12, 2), FS, 0)[..., 0] == 0).float().mean()
    assert abs(float(frac) - 0.25) < 0.02

# ---- 3KG

def test_dower_coefficients():
    D, Dinv = dower_matrices(dtype=torch.float64)
    assert torch.allclose(Dinv @ D, torch.eye(3, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(torch.linalg.pinv(D), Dinv, atol=5e-4)

def test_vcg_round_trip(x):
    v = ecg_to_vcg(x)
    x8 = vcg_to_ecg(v, n_leads=8)                           # signals a dipole can produce: the round trip keeps them
    assert (vcg_to_ecg(ecg_to_vcg(x8), 8) - x8).abs().max() < 1e-3 * x8.abs().max()
    assert (ThreeKG(0., 1.)(x8, FS, 0) - x8).abs().max() < 1e-3 * x8.abs().max()
    real, back = leads8(x), leads8(vcg_to_ecg(v))          # real ECGs: a rank-3 projection that keeps most of them
    r2 = 1 - ((back - real)**2).sum((0, 2)) / ((real - real.mean(-1, keepdim=True))**2).sum((0, 2))
    assert r2[LEADS8.index('II')] > 0.9 and r2.mean() > 0.6

def test_limb_leads_after_3kg(x):
    for aug in (ThreeKG(), ThreeKG(keep_residual=True), ThreeKG(90., 2.)):
        y = aug(x, FS, 0); I, II = y[:, 0], y[:, 1]
        for lead, expected in (('III', II - I), ('aVR', -(I + II) / 2), ('aVL', I - II / 2), ('aVF', II - I / 2)):
            assert torch.allclose(y[:, LEADS.index(lead)], expected, atol=1e-5), lead
    assert torch.allclose(complete_leads(leads8(x)), x, atol=2e-3)            # PTB-XL's own limb leads agree

def test_3kg_is_a_rotation_and_scaling_of_the_vcg(x):
    yr = ThreeKG(45., 1.)(x, FS, 1)
    assert (ecg_to_vcg(yr).norm(dim=1) - ecg_to_vcg(x).norm(dim=1)).abs().max() < 5e-3
    g = torch.Generator().manual_seed(5); torch.rand(64, generator=g)           # replay: mask, scales, rotations
    M = random_axis_scales(64, 1.5, g)[..., None] * random_rotations(64, 45., g)
    assert (ecg_to_vcg(ThreeKG()(x, FS, 5)) - M @ ecg_to_vcg(x)).abs().max() < 5e-3
    R = random_rotations(5000, 45., torch.Generator().manual_seed(0), dtype=torch.float64)   # R = Rz(c) Ry(b) Rx(a)
    a, b, c = torch.atan2(R[:, 2, 1], R[:, 2, 2]), -torch.asin(R[:, 2, 0]), torch.atan2(R[:, 1, 0], R[:, 0, 0])
    deg = torch.rad2deg(torch.stack([a, b, c], 1))
    assert deg.abs().max() <= 45 + 1e-9 and ((deg.abs().mean(0) - 22.5).abs() < 1).all()   # uniform in ±45° per axis
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5000, 3, 3), atol=1e-12)

# ---- views

def test_views_independent_and_seeded(x):
    a, b = MultiView([GaussianNoise(0.1)] * 2)(x, FS, 0)
    na, nb = (a - x).flatten(), (b - x).flatten()
    assert abs(float(torch.corrcoef(torch.stack([na, nb]))[0, 1])) < 0.01       # independent noise draws
    for make in (simclr_views, threekg_views):
        v1, v2 = make()(x, FS, 0)
        assert not torch.equal(v1, v2) and all(torch.equal(p, q) for p, q in zip(make()(x, FS, 0), (v1, v2)))

def test_presets(x):
    x0 = x.clone()
    for make, n, shape in ((simclr_views, 2, (64, 12, 1000)), (threekg_views, 2, (64, 12, 1000)),
                           (clocs_segments, 2, (64, 12, 500)), (clocs_leads, 12, (64, 1, 1000))):
        views = make()(x, FS, 0)
        assert len(views) == n and all(v.shape == shape and torch.isfinite(v).all() for v in views)
    assert torch.equal(x, x0)
    v = threekg_views()(x, FS, 0)[0]
    assert ((v == 0).float().mean(-1) >= 0.5).all()

def test_segment_and_lead_views(x):
    s = clocs_segments(2)(x, FS)
    assert torch.equal(torch.cat(s, -1), x)
    s = SegmentViews(3, segment=3.)(x, FS, 0)
    for i in range(8):
        start = next(k for k in range(101) if torch.equal(x[i, :, k:k + 300], s[0][i]))
        assert torch.equal(torch.cat([o[i] for o in s], -1), x[i, :, start:start + 900])
    lv = clocs_leads(('II', 'V2', 'aVL'))(x, FS)
    assert all(torch.equal(v[:, 0], x[:, LEADS.index(n)]) for v, n in zip(lv, ('II', 'V2', 'aVL')))
    lk = LeadViews(('V2',), keep_channels=True)(x, FS)[0]
    assert torch.equal(lk[:, 7], x[:, 7]) and (lk[:, [i for i in range(12) if i != 7]] == 0).all()
    xf, sample, view = flatten_views(s)
    assert xf.shape == (192, 12, 300) and torch.equal(xf[64 + 5], s[1][5])
    assert sample[64 + 5] == 5 and view[64 + 5] == 1

@pytest.mark.parametrize('device', DEVICES)
def test_devices(x, device):
    xd = x.to(device)
    for aug in all_augs():
        y = aug(xd, FS, make_generator(0, device))
        assert y.device.type == device and torch.isfinite(y).all()
        assert torch.equal(y, aug(xd, FS, 0))
    assert all(v.device.type == device for v in threekg_views()(xd, FS, 0))

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_generator_on_the_wrong_device(x):
    with pytest.raises(AugmentError, match='lives on'): GaussianNoise()(x.cuda(), FS, make_generator(0, 'cpu'))

