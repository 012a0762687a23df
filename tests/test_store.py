"The sharded store: identical signals to the WFDB path, resumable after SIGKILL, atomic shards, bad input reported"
import json, os, signal, subprocess, sys, time, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest
from ecg_dml.core import sample_dir, LEADS
from ecg_dml.data.wfdb import read_record
from ecg_dml.data.store import build_store, ECGStore, validate_store, StoreError
from ecg_dml.data.loaders import ecg_dls

def _sample_index(n=None):
    root = sample_dir()
    db = pd.read_csv(root/'ptbxl_database.csv', index_col='ecg_id')
    return db.assign(path=[str(root/f) for f in db.filename_lr]).iloc[:n]

def test_store_equals_wfdb_path_on_full_ptbxl(shared, tmp_path):
    "all shared PTB-XL records (every row of the CSV) at 100 Hz: store (int16 and float16) == read_record, record by record"
    from ecg_dml.data.ptbxl import ptbxl_index
    idx = ptbxl_index(shared/'ptbxl', fs=100)
    st = build_store(idx, tmp_path/'s16', shard_size=200, n_workers=2, progress=False)
    st16 = build_store(idx, tmp_path/'f16', dtype='float16', shard_size=500, n_workers=0, progress=False)
    assert len(st) == len(idx) == len(pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv')) and len(st.skipped) == 0
    for i, p in enumerate(idx.path):
        x = read_record(p).signal
        assert np.abs(st[i] - x).max() <= np.abs(x).max() / 65534 + 1e-6
        assert np.abs(st16[i] - x).max() <= 2e-3 * max(1, np.abs(x).max())
    assert st.meta.ecg_id.tolist() == idx.index.tolist()
    validate_store(tmp_path/'s16')

def test_store_500hz_resampled_to_100(shared, tmp_path):
    from ecg_dml.data.ptbxl import ptbxl_index
    idx = ptbxl_index(shared/'ptbxl', fs=500).iloc[:40]
    st = build_store(idx, tmp_path/'s', fs=100, n_workers=0, progress=False)
    lr = ptbxl_index(shared/'ptbxl', fs=100).loc[idx.index]
    x100 = np.stack([read_record(p).signal for p in lr.path])
    corr = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(st.get_batch(np.arange(40)), x100)])
    assert st.shape == (40, 12, 1000) and corr > 0.95, corr

def test_parallel_and_serial_builds_are_identical(tmp_path):
    idx = _sample_index(120)
    a = build_store(idx, tmp_path/'a', shard_size=32, n_workers=2, progress=False)
    b = build_store(idx, tmp_path/'b', shard_size=32, n_workers=0, progress=False)
    for f in sorted((tmp_path/'a'/'shards').glob('*.npy')):
        assert f.read_bytes() == (tmp_path/'b'/'shards'/f.name).read_bytes()
    assert np.array_equal(a.get_batch(np.arange(120)), b.get_batch(np.arange(120)))

BUILD = """
import sys, pandas as pd
from ecg_dml.core import sample_dir
from ecg_dml.data.store import build_store
root = sample_dir(); db = pd.read_csv(root/'ptbxl_database.csv', index_col='ecg_id')
db = db.assign(path=[str(root/f) for f in db.filename_lr])
build_store(db, sys.argv[1], shard_size=10, n_workers=0, progress=False)
"""

def test_resume_after_sigkill(tmp_path):
    "kill a build mid-way with SIGKILL; rerunning finishes it and gives the same store as an uninterrupted build"
    dest = tmp_path/'killed'
    p = subprocess.Popen([sys.executable, '-c', BUILD, str(dest)])
    t0 = time.time()
    while time.time() - t0 < 120 and len(list((dest/'shards').glob('*.json'))) < 5: time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    done = len(list((dest/'shards').glob('*.json')))
    assert 5 <= done < 25, f'kill landed too late to test resume ({done} shards done)'
    assert not (dest/'records.csv').exists()
    with pytest.raises(StoreError, match='incomplete store'): ECGStore(dest)
    mtimes = {f.name: f.stat().st_mtime_ns for f in (dest/'shards').glob('*.json')}
    st = build_store(_sample_index(), dest, shard_size=10, n_workers=0, progress=False)
    assert all((dest/'shards'/n).stat().st_mtime_ns == m for n, m in mtimes.items())  # finished shards kept
    ref = build_store(_sample_index(), tmp_path/'ref', shard_size=10, n_workers=0, progress=False)
    assert np.array_equal(st.get_batch(np.arange(250)), ref.get_batch(np.arange(250)))
    assert validate_store(dest)['problems'] == []
    assert not list(dest.rglob('.*.tmp'))

def test_half_written_shard_is_never_served(tmp_path):
    "a shard's data without its manifest (killed between the two writes) is rebuilt, not read"
    idx = _sample_index(30)
    dest = tmp_path/'s'
    build_store(idx, dest, shard_size=10, n_workers=0, progress=False)
    (dest/'shards'/'shard_000001.json').unlink()
    f = dest/'shards'/'shard_000001.npy'; f.write_bytes(f.read_bytes()[:1000])   # torn data file
    st = build_store(idx, dest, shard_size=10, n_workers=0, progress=False)
    assert validate_store(dest)['problems'] == []
    assert np.abs(st[15] - read_record(idx.path.iloc[15]).signal).max() < 1e-4

def test_corruption_is_detected(tmp_path):
    idx = _sample_index(20); dest = tmp_path/'s'
    build_store(idx, dest, shard_size=10, n_workers=0, progress=False)
    f = dest/'shards'/'shard_000000.gain.npy'; b = bytearray(f.read_bytes()); b[-3] ^= 0x55; f.write_bytes(bytes(b))
    with pytest.raises(StoreError, match='checksum mismatch'): validate_store(dest)
    rep = validate_store(dest, raise_=False)
    assert len(rep['problems']) == 1 and 'shard_000000.gain.npy' in rep['problems'][0]

def _corrupt_copies(src_rec, folder):
    "copies of one real record, each broken differently; returns {name: expected words in the reason}"
    folder.mkdir(parents=True, exist_ok=True)
    hea, dat = Path(f'{src_rec}.hea').read_text(), Path(f'{src_rec}.dat').read_bytes()
    stem = Path(src_rec).name
    def write(name, h, d):
        (folder/f'{name}.hea').write_text(h.replace(stem, name))
        if d is not None: (folder/f'{name}.dat').write_bytes(d)
    write('good', hea, dat)
    write('truncated', hea, dat[:len(dat) // 3])
    write('nodata', hea, None)
    write('unknownlead', hea.replace(' V3\n', ' XYZ\n'), dat)
    write('garbage', 'this is not a header\n', dat)
    return {'truncated': None, 'nodata': None, 'unknownlead': None, 'garbage': None}

def test_bad_records_are_skipped_and_reported(tmp_path, capsys):
    src = _sample_index(1).path.iloc[0]
    bad = _corrupt_copies(src, tmp_path/'wfdb')
    idx = pd.DataFrame({'path': [str(tmp_path/'wfdb'/n) for n in ['good', *bad, 'good']]})
    st = build_store(idx, tmp_path/'store', n_workers=0, progress=False, log=tmp_path/'build.log')
    sk = st.skipped
    assert len(st) == 2 and len(sk) == len(bad) and len(st) + len(sk) == len(idx)
    assert sorted(Path(r).name for r in sk.record) == sorted(bad)
    assert all(isinstance(r, str) and len(r) > 10 for r in sk.reason)
    out = capsys.readouterr().out
    assert f'{len(idx)} records seen = 2 stored + {len(bad)} skipped' in out
    for name in bad: assert name in out and name in (tmp_path/'build.log').read_text()

def test_existing_store_with_other_settings_refused(tmp_path):
    idx = _sample_index(10)
    build_store(idx, tmp_path/'s', n_workers=0, progress=False)
    with pytest.raises(StoreError, match='existing store'): build_store(idx, tmp_path/'s', fs=250, progress=False)

def test_loaders_read_the_store(tmp_path):
    idx = _sample_index(100)
    st = build_store(idx, tmp_path/'s', shard_size=16, n_workers=0, progress=False)
    split = np.where(idx.strat_fold.to_numpy() <= 8, 'train', 'valid')
    dls = ecg_dls(st, targets=idx.age.to_numpy(np.float32), split=split, bs=16, with_ids=True, device='cpu',
                  num_workers=2)
    seen = []
    for x, y, ids in dls.train:
        rows = [int(np.nonzero(st.meta.ecg_id.to_numpy() == r)[0][0]) for r in ids[:, 0]]
        assert np.array_equal(x.numpy(), st.get_batch(rows))
        assert np.array_equal(ids[:, 1].numpy(), st.meta.patient_id.to_numpy()[rows].astype(np.int64))
        seen += rows
    assert len(seen) == len(set(seen)) == (split == 'train').sum() // 16 * 16

def test_allow_flat_reaches_build_store_and_pretrain(tmp_path, shared):
    "CinC-style records with one empty precordial channel: skipped with the reason by default, stored with allow_flat"
    import wfdb
    from ecg_dml.core import LEADS
    from ecg_dml.data.store import build_store
    from ecg_dml.pretrain import pretrain
    db = pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv', index_col='ecg_id').iloc[:12]
    folder = tmp_path/'wfdb'; folder.mkdir()
    for i, f in enumerate(db.filename_lr):
        x, fields = wfdb.rdsamp(str(shared/'ptbxl'/f))
        if i % 3 == 0: x[:, fields['sig_name'].index('V3')] = 0.        # an empty channel
        wfdb.wrsamp(f'r{i:02d}', fs=fields['fs'], units=['mV'] * 12, sig_name=fields['sig_name'], p_signal=x,
                    fmt=['16'] * 12, adc_gain=[1000.] * 12, baseline=[0] * 12, write_dir=str(folder))
    learn = pretrain(folder, method='simclr', encoder='xresnet1d18', bs=4, out=tmp_path/'strict', fit=False, progress=False)
    sk = pd.read_csv(tmp_path/'strict'/'store'/'skipped.csv')
    assert len(sk) == 4 and sk.reason.str.contains('flat lead').all() and sk.reason.str.contains('V3').all()
    learn = pretrain(folder, method='simclr', encoder='xresnet1d18', bs=4, out=tmp_path/'lenient', fit=False,
                     progress=False, read_kw={'allow_flat': True})
    st = learn.dls.train.dataset.signals
    assert len(st) == 12 and len(st.skipped) == 0
    v3 = LEADS.index('V3')
    assert (np.ptp(st.get_batch(np.arange(12))[:, v3], axis=-1) == 0).sum() == 4
    with pytest.raises(ValueError, match='read_kw configures the default reader'):
        build_store(pd.DataFrame({'path': []}), tmp_path/'x', reader=lambda r: r, read_kw={'allow_flat': True})

def test_scan_rejects_are_in_skipped_csv_and_counts_reconcile_in_the_files(tmp_path, shared):
    "pretrain(folder): records the scan rejects are listed in the store's skipped.csv with the scan's reason"
    import shutil
    from ecg_dml.pretrain import pretrain
    folder = tmp_path/'wfdb'; folder.mkdir()
    db = pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv', index_col='ecg_id').iloc[:5]
    for f in db.filename_lr:
        for ext in ('.hea', '.dat'): shutil.copy(f'{shared/"ptbxl"/f}{ext}', folder)
    name = Path(db.filename_lr.iloc[0]).name
    h = folder/f'{name}.hea'; h.write_text(h.read_text().replace(f'{name} 12 100 1000', f'{name} 12 fast 1000', 1))
    (folder/'orphan.hea').write_text('orphan 12 100 1000\n')          # a header whose signal lines are missing
    learn = pretrain(folder, method='simclr', encoder='xresnet1d18', bs=2, out=tmp_path/'run', fit=False, progress=False)
    st = learn.dls.train.dataset.signals
    rec, sk = pd.read_csv(st.path/'records.csv'), pd.read_csv(st.path/'skipped.csv')
    assert len(rec) == 4 and len(rec) + len(sk) == 6                   # seen = stored + skipped, in the files
    assert sk.reason.str.contains("sampling frequency is 'fast'").sum() == 1 and sk.record.str.contains('orphan').sum() == 1

@pytest.mark.parametrize('damage', ['truncate', 'extend', 'swap_gain', 'drop_manifest', 'flip_byte'])
def test_open_checks_shards_and_verify_checks_bytes(tmp_path, damage):
    "a damaged shard is refused when the store is opened (cheaply) or, for changed bytes of the same size, with verify=True"
    st = build_store(_sample_index(100), tmp_path/'s', shard_size=40, n_workers=0, progress=False)
    want = st.get_batch(np.arange(len(st)))
    sh = tmp_path/'s'/'shards'
    f, g = sh/'shard_000001.npy', sh/'shard_000001.gain.npy'
    good = {p: p.read_bytes() for p in sh.iterdir()}
    if damage == 'truncate': f.write_bytes(good[f][:-24])
    elif damage == 'extend': f.write_bytes(good[f] + bytes(24))
    elif damage == 'swap_gain': g.write_bytes(good[sh/'shard_000002.gain.npy'])      # another shard's gains (20 rows, not 40)
    elif damage == 'drop_manifest': (sh/'shard_000001.json').unlink()
    else: b = bytearray(good[f]); b[-1] ^= 0xFF; f.write_bytes(bytes(b))
    if damage == 'flip_byte':
        assert np.array_equal(ECGStore(tmp_path/'s')[0], want[0])                  # same size: the cheap check passes
        with pytest.raises(StoreError, match=r'shard_000001\.npy: checksum mismatch'): ECGStore(tmp_path/'s', verify=True)
    else:
        with pytest.raises(StoreError, match='shard_000001|shard 1') as e: ECGStore(tmp_path/'s')
        assert 'none is served' in str(e.value) and 'build_store' in str(e.value)
    rep = validate_store(tmp_path/'s', raise_=False)                             # collects instead of raising on open
    assert any('shard_000001' in p or 'shard 1' in p for p in rep['problems'])
    st2 = build_store(_sample_index(100), tmp_path/'s', shard_size=40, n_workers=0, progress=False)   # rebuilt
    assert ECGStore(tmp_path/'s', verify=True).verified and np.array_equal(st2.get_batch(np.arange(len(st2))), want)
