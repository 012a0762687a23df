"Synthetic ECG corpus (ecg_dml.data.synthetic): deepfake-ecg's GAN -> 12-lead mV ECGs -> an ECGStore"
import json, sys
import numpy as np, pandas as pd, pytest, torch
from ecg_dml.core import LEADS, sample_dir
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.store import ECGStore, validate_store
from ecg_dml.data.synthetic import (SYNTHETIC_ID_OFFSET, GAN_SCALE_MV, SyntheticError, DeepfakeReader, generate_batch,
                                    generate_ecgs, load_generator, noise_seeds, synthetic_index, synthetic_store)

try:
    import deepfakeecg  # noqa: F401
    HAVE_DFE = True
except ImportError: HAVE_DFE = False
needs_dfe = pytest.mark.skipif(not HAVE_DFE, reason='deepfake-ecg is not installed (pip install --no-deps deepfake-ecg)')
L = {l: i for i, l in enumerate(LEADS)}

@pytest.fixture(scope='module')
def net():
    if not HAVE_DFE: pytest.skip('deepfake-ecg is not installed (pip install --no-deps deepfake-ecg)')
    return load_generator('cpu')

@pytest.fixture(scope='module')
def store64(tmp_path_factory):
    if not HAVE_DFE: pytest.skip('deepfake-ecg is not installed (pip install --no-deps deepfake-ecg)')
    d = tmp_path_factory.mktemp('synth')/'s'
    return synthetic_store(64, d, seed=0, shard_size=32, progress=False)


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'deepfakeecg', None)   # import deepfakeecg -> ImportError
    for f in (lambda: load_generator('cpu'), lambda: synthetic_store(4, tmp_path/'s', progress=False)):
        with pytest.raises(SyntheticError, match='pip install --no-deps deepfake-ecg'): f()
    assert not (tmp_path/'s').exists()                    # nothing created before the check

def test_noise_seeds_depend_on_seed_and_index_only():
    a = noise_seeds(100, seed=7)
    np.testing.assert_array_equal(noise_seeds(10, seed=7, start=90), a[90:])
    assert len(set(a) | set(noise_seeds(100, seed=8))) == 200 and (a >= 0).all() and a.dtype == np.int64

def test_ids_cannot_collide_with_ptbxl():
    idx = synthetic_index(50, seed=0)
    real = ptbxl_index(sample_dir())
    assert idx.ecg_id.min() == SYNTHETIC_ID_OFFSET > 100 * real.index.max()   # PTB-XL ids stop at 21837
    assert idx.patient_id.min() > 100 * real.patient_id.max()
    assert idx.patient_id.is_unique and idx.ecg_id.is_unique and idx.synthetic.all()
    other = synthetic_index(50, seed=1, first_id=SYNTHETIC_ID_OFFSET + 50)    # a second corpus beside the first
    assert not set(idx.ecg_id) & set(other.ecg_id)
    with pytest.raises(ValueError): synthetic_index(0)

@needs_dfe
def test_load_generator_leaves_global_rng_alone():
    s = torch.random.get_rng_state(); load_generator('cpu')
    assert torch.equal(s, torch.random.get_rng_state())

def test_generate_reproducible_shapes_units(net):
    x = generate_ecgs(6, seed=3, fs=100, batch=4, net=net)
    assert x.shape == (6, 12, 1000) and x.dtype == np.float32
    np.testing.assert_allclose(generate_ecgs(6, seed=3, fs=100, batch=4, net=net), x, atol=1e-6)       # same seed
    np.testing.assert_allclose(generate_ecgs(3, seed=3, fs=100, start=3, batch=2, net=net), x[3:], atol=1e-4)  # any batching
    assert np.abs(generate_ecgs(6, seed=4, fs=100, batch=4, net=net) - x).mean() > 0.01        # another seed differs
    p2p = np.ptp(x[:, L['II']], -1)
    assert 0.3 < np.median(p2p) < 3.0, f'lead II peak-to-peak {p2p} is not in mV'                # uV would be ~1000
    assert generate_ecgs(2, seed=3, fs=500, net=net).shape == (2, 12, 5000)

def test_derived_leads_follow_einthoven_goldberger(net):
    x = generate_batch(net, noise_seeds(4))
    assert x.shape == (4, 12, 5000) and np.abs(x).max() <= 1.5 * GAN_SCALE_MV
    I, II = x[:, L['I']], x[:, L['II']]
    np.testing.assert_allclose(x[:, L['III']], II - I, atol=1e-5)
    np.testing.assert_allclose(x[:, L['aVR']], -(I + II) / 2, atol=1e-5)
    np.testing.assert_allclose(x[:, L['aVL']], I - II / 2, atol=1e-5)
    np.testing.assert_allclose(x[:, L['aVF']], II - I / 2, atol=1e-5)

def test_store_contents_ids_and_validation(store64, net):
    st = store64
    assert st.shape == (64, 12, 1000) and st.fs == 100 and st.leads == LEADS
    x = st.get_batch(np.arange(64))
    np.testing.assert_allclose(x, generate_ecgs(64, seed=0, fs=100, net=net), atol=1e-3)   # int16 quantisation only
    np.testing.assert_allclose(x[:, L['III']], x[:, L['II']] - x[:, L['I']], atol=1e-3)
    assert (st.meta.ecg_id.to_numpy() == SYNTHETIC_ID_OFFSET + np.arange(64)).all()
    assert st.meta.patient_id.is_unique and st.meta.synthetic.all()
    rep = validate_store(st.path)
    assert rep['problems'] == [] and rep['n'] == 64 and rep['skipped'] == 0
    assert json.loads((st.path/'synthetic.json').read_text())['seed'] == 0

def test_store_resume_and_seed_mismatch(store64):
    shard = store64.path/'shards'/'shard_000000.npy'
    before = shard.stat().st_mtime_ns
    again = synthetic_store(64, store64.path, seed=0, shard_size=32, progress=False)
    assert shard.stat().st_mtime_ns == before and len(again) == 64     # complete shards are not regenerated
    with pytest.raises(SyntheticError, match='seed'): synthetic_store(64, store64.path, seed=1, shard_size=32, progress=False)

def test_workers_give_identical_store(store64, tmp_path):
    st2 = synthetic_store(64, tmp_path/'w', seed=0, shard_size=32, n_workers=2, threads=1, progress=False)
    np.testing.assert_array_equal(st2.get_batch(np.arange(64)), store64.get_batch(np.arange(64)))

def test_shorter_store_keeps_the_start_and_longer_is_refused(store64, tmp_path):
    st5 = synthetic_store(8, tmp_path/'five', seconds=5, seed=0, batch=32, progress=False)
    assert st5.shape == (8, 12, 500)
    np.testing.assert_allclose(st5.get_batch(np.arange(8)), store64.get_batch(np.arange(8))[..., :500], atol=1e-3)
    with pytest.raises(ValueError, match='10 s'): synthetic_store(8, tmp_path/'long', seconds=20, progress=False)

def test_reader_rejects_a_mismatched_table():
    r = DeepfakeReader(noise_seeds(4, seed=0), batch=2)
    bad = synthetic_index(4, seed=1).iloc[1]
    with pytest.raises(SyntheticError, match='noise seed'): r(bad)
