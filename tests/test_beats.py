"Beat templates: equal to a brute-force per-record computation on real PTB-XL ECGs; records without beats get a reason (and are nobody's kNN neighbour); add_beats resumes after SIGKILL; corrupt templates are detected"
import json, os, signal, statistics, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch, wfdb
from scipy import signal as ss
from wfdb import processing
from ecg_dml.core import LEADS
from ecg_dml.data.beats import BeatConfig, add_beats, beat_templates, BeatStore
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.store import build_store, validate_store, StoreError
from ecg_dml.metric.miners import knn_graph

N_REAL = 240   # records of the shared PTB-XL subset checked one by one (the whole store is built as in pretraining)

def brute_force(path:str, cfg=BeatConfig()):
    "One record, step by step from the definitions: high-pass, xqrs on lead II at 250 Hz, windows, per-sample median"
    x = wfdb.rdsamp(path)[0].T.astype(np.float32); fs = 100
    sos = ss.butter(3, cfg.highpass, btype='highpass', fs=fs, output='sos')
    h = ss.sosfiltfilt(sos, x, axis=-1, padtype='odd', padlen=min(x.shape[1] - 1, round(fs / cfg.highpass))).astype(np.float32)
    lead = h[LEADS.index('II')]
    up = ss.resample_poly(lead, 5, 2, padtype='line')                    # 100 -> 250 Hz
    peaks = np.unique(np.rint(processing.xqrs_detect(up.astype(np.float64), fs=250, verbose=False) * 100 / 250).astype(int).clip(0, 999))
    nb, na = 25, 45
    full = [p for p in peaks if p - nb >= 0 and p + na <= x.shape[1]]
    assert len(full) >= cfg.min_beats, path                            # every record of the subset has beats in lead II
    tmpl = np.array([[statistics.median(float(h[l, p + t]) for p in full) for t in range(-nb, na)] for l in range(12)])
    rr = np.diff(peaks) / fs
    return tmpl, len(full), float(np.median(rr)), float(np.std(rr, ddof=1))

@pytest.fixture(scope='module')
def real_store(shared, tmp_path_factory):
    idx = ptbxl_index(shared/'ptbxl', fs=100).iloc[:N_REAL]
    return build_store(idx, tmp_path_factory.mktemp('beats')/'store', shard_size=64, n_workers=2, progress=False, beats=True), idx

def test_templates_equal_brute_force_on_real_ecgs(real_store):
    st, idx = real_store
    b = st.beats
    assert len(b) == len(idx) == N_REAL and b.valid.all()
    got = b.get_batch(np.arange(len(b)))
    for i, path in enumerate(idx.path):
        tmpl, n, rr_med, rr_sd = brute_force(str(path))
        np.testing.assert_allclose(got[i], tmpl, rtol=0, atol=1e-4, err_msg=str(path))   # the int16 store: < 0.1 uV from the source
        row = b.table.iloc[i]
        assert (row.n_beats, row.detect_lead) == (n, 'II'), path
        np.testing.assert_allclose([row.rr_median, row.rr_sd], [rr_med, rr_sd], rtol=1e-9, err_msg=str(path))
    assert validate_store(st.path)['problems'] == []

def test_record_without_beats_gets_reason_and_no_neighbours(tmp_path, shared):
    "A record whose leads are all flat (a disconnected recorder) is stored; its template is NaN with the reason"
    idx = ptbxl_index(shared/'ptbxl', fs=100).iloc[:40].copy()
    idx['flat'] = [i == 7 for i in range(len(idx))]
    class Reader:     # the real signals, but record 7 comes back flat
        def __call__(self, row):
            x = wfdb.rdsamp(str(row['path']))[0].T.astype(np.float32)
            return (np.zeros_like(x) if row['flat'] else x), 100.
    st = build_store(idx, tmp_path/'s', n_workers=0, progress=False, reader=Reader(), beats=True)
    b = st.beats
    tab = b.table
    assert tab.n_beats[7] == 0 and tab.reason[7].startswith('fewer than 3 complete beats in every lead (II: flat')
    assert np.isnan(b[7]).all() and b.valid.sum() == 39 and tab.reason.drop(7).isna().all()
    assert "1 without beats" in repr(b) and pd.read_csv(st.path/'beats.csv').reason.notna().sum() == 1
    g, d = knn_graph(b, k=3, device='cpu')
    assert (g[7] == -1).all() and not (g == 7).any() and (g[torch.arange(40) != 7] >= 0).all()

KILL = """
import os, signal, sys
import ecg_dml.data.beats as B
orig = B._beats_shard
def dying(k, path, cfg):
    if k == 2: os.kill(os.getpid(), signal.SIGKILL)     # killed while computing the third shard
    return orig(k, path, cfg)
B._beats_shard = dying
B.add_beats(sys.argv[1], n_workers=0, progress=False)
"""

def test_add_beats_resumes_after_sigkill(tmp_path, shared):
    idx = ptbxl_index(shared/'ptbxl', fs=100).iloc[:100]
    st = build_store(idx, tmp_path/'s', shard_size=25, n_workers=0, progress=False)
    p = subprocess.run([sys.executable, '-c', KILL, str(st.path)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    sh = st.path/'shards'
    done = sorted(f.name for f in sh.glob('*.beats.json'))
    assert done == ['shard_000000.beats.json', 'shard_000001.beats.json'] and not (st.path/'beats.csv').exists()
    with pytest.raises(StoreError, match='run add_beats'): BeatStore(st)
    mtimes = {f: os.stat(sh/f).st_mtime_ns for f in ('shard_000000.beats.npy', 'shard_000001.beats.npy')}
    b = add_beats(st, n_workers=0, progress=False)                        # finishes shards 2 and 3 only
    assert {f: os.stat(sh/f).st_mtime_ns for f in mtimes} == mtimes
    ref, tab = beat_templates(st.get_batch(np.arange(100)), 100.)
    np.testing.assert_array_equal(b.get_batch(np.arange(100)), ref)
    assert (b.table.n_beats.to_numpy() == tab.n_beats.to_numpy()).all()
    assert not list(sh.glob('.*.tmp'))

def test_corrupt_or_stale_templates_are_detected(tmp_path, shared):
    idx = ptbxl_index(shared/'ptbxl', fs=100).iloc[:50]
    st = build_store(idx, tmp_path/'s', shard_size=25, n_workers=0, progress=False, beats=True)
    f = st.path/'shards'/'shard_000001.beats.npy'
    raw = bytearray(f.read_bytes()); raw[-400:-300] = bytes(100); f.write_bytes(bytes(raw))   # 100 bytes zeroed
    with pytest.raises(StoreError, match='shard_000001.beats.npy: checksum mismatch'): validate_store(st.path)
    man = st.path/'shards'/'shard_000000.beats.json'
    m = json.loads(man.read_text()); m['signals'] = {'shard_000000.npy': '0' * 64}; man.write_text(json.dumps(m))
    rep = validate_store(st.path, raise_=False)
    assert any('shard_000000.beats.json: computed from other signals' in p for p in rep['problems'])
    with pytest.raises(StoreError, match='overwrite=True'): add_beats(st, BeatConfig(before=0.3), n_workers=0, progress=False)
