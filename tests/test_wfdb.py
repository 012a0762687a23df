"ecg_dml.data.wfdb on real records: PTB-XL, the wfdb sample corpus, and broken copies made from a real record"
import re, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest, wfdb
from ecg_dml.core import LEADS, sample_dir
from ecg_dml.data.wfdb import (RecordError, ECGRecord, normalise_lead_name, parse_comments, read_record, scan_wfdb,
                               MAX_MEDIAN_STEP_MV)

SRC = sample_dir()/'records100/00000/00005_lr'   # a real PTB-XL record: 12 leads, 100 Hz, 1000 samples, fmt 16

# ---------------------------------------------------------------- (a) PTB-XL: identical to wfdb.rdsamp
def _same_as_rdsamp(p):
    rec = read_record(p)
    ref, fields = wfdb.rdsamp(str(p))
    assert isinstance(rec, ECGRecord) and rec.leads == LEADS and rec.signal.dtype == np.float32
    assert [normalise_lead_name(n) for n in fields['sig_name']] == list(LEADS)   # PTB-XL stores the standard order
    np.testing.assert_allclose(rec.signal, ref.T.astype(np.float32), rtol=0, atol=1e-6)
    assert rec.fs == fields['fs'] and rec.path == str(p)
    return rec

def test_ptbxl_100hz_all_records_equal_rdsamp(shared):
    heas = sorted((shared/'ptbxl/records100').rglob('*.hea'))
    db = pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv')
    assert sorted(str(h.relative_to(shared/'ptbxl').with_suffix('')) for h in heas) == sorted(db.filename_lr)   # one per row
    for h in heas:
        rec = _same_as_rdsamp(h.with_suffix(''))
        assert rec.signal.shape == (12, 1000) and rec.fs == 100

def test_ptbxl_500hz_records_equal_rdsamp(shared):
    heas = sorted((shared/'ptbxl/records500').rglob('*.hea'))
    assert len(heas) == 488
    for h in heas[::4]:
        rec = _same_as_rdsamp(h.with_suffix(''))
        assert rec.signal.shape == (12, 5000) and rec.fs == 500

def test_sample_scan_and_extensions():
    df = scan_wfdb(sample_dir(), progress=False)
    assert len(df) == 250 and df.error.isna().all() and df.has_12_leads.all()
    assert set(df.record) == set((sample_dir()/'RECORDS').read_text().split())   # RECORDS honoured: no records500
    for p in (SRC, f'{SRC}.hea', f'{SRC}.dat', str(SRC)):
        assert read_record(p).path == str(SRC)

def test_scan_reads_each_header_text_once(monkeypatch):
    "the default/field checks of a scan share one read of each header's text, with or without decoding the signals"
    import ecg_dml.data.wfdb as w
    reads, orig = [], w._header_lines
    monkeypatch.setattr(w, '_header_lines', lambda p: reads.append(p) or orig(p))
    for read_signals in (False, True):
        reads.clear()
        df = scan_wfdb(sample_dir()/'records500', read_signals=read_signals, progress=False)
        assert len(df) == 10 and df.error.isna().all() and not df.fs_default.any() and df.gain_default.isna().all()
        assert sorted(reads) == sorted(map(Path, df.path)), read_signals

# ---------------------------------------------------------------- (b) the wfdb sample corpus
@pytest.fixture(scope='module')
def corpus(shared, tmp_path_factory):
    log = tmp_path_factory.mktemp('log')/'scan.log'
    df = scan_wfdb(shared/'wfdb-samples', read_signals=True, log=log, progress=False)
    return shared/'wfdb-samples', df, log

def test_corpus_scan_reconciles(corpus, capsys):
    root, df, log = corpus
    ok, skipped = int(df.error.isna().sum()), int(df.error.notna().sum())
    assert ok + skipped == len(df) and df.record.is_unique and ok > 0 and skipped > 0
    text = log.read_text().splitlines()
    n_parts = int(re.search(r'\((\d+) segment/layout headers', text[0]).group(1))
    assert text[0].startswith(f'scanned {len(df)} records: {ok} ok, {skipped} skipped')
    assert len(df) + n_parts == len(list(root.rglob('*.hea')))   # every header is a record or a part of one
    for r, e in zip(df.record, df.error):                         # the log names every skipped record and its reason
        if e is not None: assert f'  skipped {r}: {e}' in text
    notes = [l for l in text[1:] if not l.startswith('  skipped ')]   # WFDB defaults in use, one line per field
    assert len(text) == 1 + len(notes) + skipped and all("WFDB's default" in l for l in notes)
    assert (len(notes) == 1) == bool(df.gain_default.notna().any())    # some MIT-BIH-style headers omit the gain

def _missing_data_files(root):
    "record -> data files its header(s) name that do not exist, computed with wfdb alone"
    out = {}
    for h in root.rglob('*.hea'):
        try: hd = wfdb.rdheader(str(h.with_suffix('')))
        except Exception: continue
        if isinstance(hd, wfdb.Record) and hd.file_name:
            gone = {f for f in hd.file_name if f != '~' and not (h.parent/f).exists()}
            if gone: out[h.with_suffix('')] = gone
    return out

def test_corpus_missing_data_files_are_named(corpus):
    root, df, _ = corpus
    err = dict(zip(df.path, df.error))
    missing = _missing_data_files(root)
    assert {f for fs in missing.values() for f in fs} >= {'1003.dat', '12726.dat', 'drive02.dat', 'n16.dat', 'wave_4.dat',
                                                         '3975656_0009.dat', '3975656_0010.dat', '3975656_0011.dat'}
    for rec, files in missing.items():
        if str(rec) in err:                                       # a record in its own right
            for f in files: assert f'data file {f} is missing' in err[str(rec)]
        else:                                                     # a segment: its multi-segment record names it
            owner = [e for p, e in err.items() if e and f'segment {rec.name}: data file' in e]
            assert len(owner) == 1 and all(f in owner[0] for f in files)

def test_corpus_known_records(corpus):
    root, df, _ = corpus
    row = df.set_index('record')
    assert row.loc['s0010_re', 'leads'] == LEADS and row.loc['s0010_re', 'fs'] == 1000 and row.loc['s0010_re', 'error'] is None
    assert row.loc['s0010_re', 'age'] == 81 and row.loc['s0010_re', 'sex'] == 'female'
    assert row.loc['100', 'leads'] == ('II', 'V5') and row.loc['100', 'error'] is None
    assert row.loc['multi-segment/041s/041s', 'error'] is None                 # multi-segment, read through wfdb
    assert 'multi-segment/041s/041s01' not in row.index                         # its segments are parts, not records
    assert 'segment header 3269321_0003.hea is missing' in row.loc['multi-segment/p000878/p000878-2137-10-26-16-57', 'error']
    assert 'no standard ECG lead' in row.loc['binformats', 'error']
    assert 'NaN' in row.loc['100skew', 'error']
    ptb = read_record(root/'s0010_re')
    assert ptb.leads == LEADS and ptb.fs == 1000 and ptb.signal.shape == (12, 38400)
    ref = wfdb.rdrecord(str(root/'s0010_re')).p_signal[:, :12].T.astype(np.float32)
    np.testing.assert_allclose(ptb.signal, ref, atol=1e-6)
    assert ptb.meta['dropped_channels'] == ['vx', 'vy', 'vz']

def test_corpus_header_only_scan_agrees(corpus, shared):
    "header-only scanning sees the same records; whatever it passes that reading rejects is a signal-level problem"
    _, full, _ = corpus
    quick = scan_wfdb(shared/'wfdb-samples', progress=False)
    assert list(quick.record) == list(full.record)
    assert not (quick.error.notna() & full.error.isna()).any()
    for e in full.error[quick.error.isna() & full.error.notna()]: assert 'NaN' in e

# ---------------------------------------------------------------- (c) broken copies of a real record
def _copy(tmp, name, dat=None, hea=None, src=SRC):
    "Record `name` in `tmp`: a copy of `src` with its data bytes / header text transformed by `dat` / `hea`"
    b, t = Path(f'{src}.dat').read_bytes(), Path(f'{src}.hea').read_text().replace(src.name, name)
    (tmp/f'{name}.dat').write_bytes(dat(b) if dat else b)
    (tmp/f'{name}.hea').write_text(hea(t) if hea else t)
    return tmp/name

def _set_lead(b, lead, value):
    "Data bytes (fmt 16, 12 interleaved leads) with every sample of `lead` set to the int16 `value`"
    x = np.frombuffer(b, '<i2').reshape(-1, 12).copy(); x[:, lead] = value
    return x.tobytes()

def _set_samples(b, lead, idx, value):
    x = np.frombuffer(b, '<i2').reshape(-1, 12).copy(); x[idx, lead] = value
    return x.tobytes()

BROKEN = {  # name: (data transform, header transform, read_record kwargs, what the error must say)
    'truncated': (lambda b: b[:10000], None, {}, 'data file truncated.dat is truncated: it holds 416 samples per lead, the header announces 1000'),
    'odd_bytes': (lambda b: b[:-1], None, {}, 'truncated: it holds 999 samples per lead'),
    'longer_header': (None, lambda t: t.replace('12 100 1000', '12 100 1500'), {}, 'the header announces 1500'),
    'shorter_header': (None, lambda t: t.replace('12 100 1000', '12 100 800'), {}, 'header/data mismatch: data file shorter_header.dat holds 1000 samples per lead, the header announces 800'),
    'unknown_lead': (None, lambda t: t.replace(' AVL', ' FOO'), {}, 'missing lead(s) aVL; the channels are I, II, III, AVR, FOO, AVF'),
    'two_unknown': (None, lambda t: t.replace(' V2', ' chest2').replace(' V6', ' V6R'), {}, 'missing lead(s) V2, V6'),
    'duplicate_lead': (None, lambda t: t.replace(' AVL', ' MLII'), {}, 'several channels map to lead II: II, MLII'),
    'nan_samples': (lambda b: _set_samples(b, 4, [10, 20, 30], -32768), None, {}, '3 missing or invalid samples (NaN/Inf) in lead(s) aVL (3)'),
    'flat_lead': (lambda b: _set_lead(b, 8, 123), None, {}, 'flat lead(s) (constant signal: electrode off or empty channel): V3'),
    'two_flat': (lambda b: _set_lead(_set_lead(b, 0, 0), 11, -5), None, {}, 'flat lead(s) (constant signal: electrode off or empty channel): I, V6'),
    'unexpected_fs': (None, None, dict(fs=500), 'unexpected fs: the record is sampled at 100 Hz, 500 Hz expected'),
    'random_same_size': (lambda b: np.random.default_rng(1).bytes(len(b)), None, {}, 'the signal looks like noise, not an ECG'),
    'random_other_size': (lambda b: np.random.default_rng(2).bytes(777), None, {}, 'truncated: it holds 32 samples per lead'),
    'empty_dat': (lambda b: b'', None, {}, 'truncated: it holds 0 samples per lead'),
    'garbage_header': (None, lambda t: 'Patient: John\nthis is not a header at all\n', {}, 'header file garbage_header.hea cannot be parsed'),
    'empty_header': (None, lambda t: '', {}, 'header file empty_header.hea cannot be parsed'),
    'pressure_units': (None, lambda t: t.replace('1000.0(0)/mV 16 0 -556', '1000.0(0)/mmHg 16 0 -556'), {}, "lead aVF is recorded in 'mmHg', not a voltage"),
    'bad_format': (None, lambda t: t.replace('.dat 16 ', '.dat 999 ', 1), {}, "data file bad_format.dat is declared in format '999', which is not a WFDB signal format"),
}

@pytest.mark.parametrize('name', list(BROKEN))
def test_broken_copy_raises_record_error(tmp_path, name):
    dat, hea, kw, msg = BROKEN[name]
    p = _copy(tmp_path, name, dat, hea)
    with pytest.raises(RecordError) as ei: read_record(p, **kw)
    e = ei.value
    assert e.record == str(p) and msg in e.problem, e.problem
    assert str(e) == f'{p}: {e.problem}'

def test_missing_data_and_header_files(tmp_path):
    p = _copy(tmp_path, 'nodat'); (tmp_path/'nodat.dat').unlink()
    with pytest.raises(RecordError, match='data file nodat.dat is missing'): read_record(p)
    with pytest.raises(RecordError, match='header file nothere.hea not found'): read_record(tmp_path/'nothere')

def test_wfdb_failures_are_chained(tmp_path):
    "a failure inside wfdb becomes a RecordError with the original exception as its cause"
    p = _copy(tmp_path, 'garbage', hea=lambda t: 'not a header\n')
    with pytest.raises(RecordError) as ei: read_record(p)
    assert ei.value.__cause__ is not None

def test_allowances(tmp_path):
    p = _copy(tmp_path, 'flat', dat=lambda b: _set_lead(b, 8, 123))
    rec = read_record(p, allow_flat=True)
    assert np.all(rec.signal[8] == np.float32(0.123))
    assert read_record(p, check=False).signal.shape == (12, 1000)
    p = _copy(tmp_path, 'foo', hea=lambda t: t.replace(' AVL', ' FOO'))
    rec = read_record(p, missing='nan')
    assert rec.meta['missing_leads'] == ['aVL'] and np.isnan(rec.signal[4]).all() and np.isfinite(np.delete(rec.signal, 4, 0)).all()
    assert read_record(p, leads=None).leads == ('I', 'II', 'III', 'aVR', 'aVF', 'V1', 'V2', 'V3', 'V4', 'V5', 'V6')
    with pytest.raises(ValueError): read_record(p, missing='zero')
    with pytest.raises(ValueError): read_record(p, leads=['I', 'ABP'])

def test_random_bytes_are_far_from_the_noise_threshold(tmp_path):
    rec = read_record(_copy(tmp_path, 'r', dat=lambda b: _set_lead(np.random.default_rng(3).bytes(len(b)), 0, 0)),
                      check=False)
    steps = np.nanmedian(np.abs(np.diff(rec.signal[1:], axis=1)), axis=1)
    assert steps.min() > 5*MAX_MEDIAN_STEP_MV

# ---------------------------------------------------------------- a collection never seen: other rate, order, units, comments
def _foreign(tmp_path, name='chal0001', fs=257, units='uV', order=(5, 0, 11, 3, 1, 2, 4, 6, 7, 8, 9, 10)):
    "A real PTB-XL signal written by wfdb as another collection would: shuffled leads, aVR-style names, uV, comments"
    x = wfdb.rdsamp(str(SRC))[0].astype(np.float64)
    names = ['I', 'II', 'III', 'aVR', 'aVL', 'aVF', 'V1', 'V2', 'V3', 'V4', 'V5', 'V6']
    scale = {'uV': 1000., 'mV': 1., 'V': 1e-3}[units]
    wfdb.wrsamp(name, fs=fs, units=[units]*12, sig_name=[names[i] for i in order], p_signal=x[:, order]*scale,
                fmt=['16']*12, adc_gain=[1000./scale]*12, baseline=[0]*12, write_dir=str(tmp_path),
                comments=['Age: 60', 'Sex: Male', 'Dx: 426783006,164865005', 'Rx: Unknown'])
    return tmp_path/name, x

@pytest.mark.parametrize('units', ['uV', 'mV', 'V'])
def test_foreign_collection(tmp_path, units):
    p, x = _foreign(tmp_path, units=units)
    rec = read_record(p)
    assert rec.leads == LEADS and rec.fs == 257 and rec.meta['units'] == [units]*12
    np.testing.assert_allclose(rec.signal, x.T, atol=1e-5)                # back in mV, standard order
    assert rec.meta['sig_name'][:3] == ['I', 'II', 'III'] and rec.meta['dropped_channels'] == []
    assert rec.meta['comments'] == {'age': 60, 'sex': 'Male', 'dx': ['426783006', '164865005'], 'rx': None}
    own = read_record(p, leads=None)
    assert own.leads == ('aVF', 'I', 'V6', 'aVR', 'II', 'III', 'aVL', 'V1', 'V2', 'V3', 'V4', 'V5')
    df = scan_wfdb(tmp_path, read_signals=True, fs=257, leads=LEADS, progress=False)
    assert len(df) == 1 and df.error.iloc[0] is None and df.age.iloc[0] == 60 and df.dx.iloc[0] == ['426783006', '164865005']
    assert df.seconds.iloc[0] == pytest.approx(1000/257)

# ---------------------------------------------------------------- scanning mixed and nested folders
def test_scan_mixed_folder_continues_and_reports(tmp_path, capsys):
    good = [_copy(tmp_path, f'good{i}') for i in range(3)]
    bad = {n: _copy(tmp_path, n, *BROKEN[n][:2]) for n in ('truncated', 'unknown_lead', 'nan_samples', 'flat_lead',
                                                          'random_same_size', 'garbage_header', 'longer_header')}
    (tmp_path/'sub').mkdir(); _copy(tmp_path/'sub', 'deep')
    log = tmp_path/'scan.log'
    df = scan_wfdb(tmp_path, read_signals=True, leads=LEADS, log=log, progress=False)
    out = capsys.readouterr().out
    assert len(df) == 3 + len(bad) + 1 and df.error.isna().sum() == 4 and df.error.notna().sum() == len(bad)
    assert out.startswith(f'scanned {len(df)} records: 4 ok, {len(bad)} skipped')
    err = df.set_index('record').error
    for n in bad:
        assert err[n] is not None and f'  skipped {n}: {err[n]}' in out and f'  skipped {n}: {err[n]}' in log.read_text()
        with pytest.raises(RecordError) as ei: read_record(tmp_path/n)
        assert ei.value.problem == err[n]                                   # the scan reports what read_record says
    assert err['sub/deep'] is None
    assert scan_wfdb(tmp_path, recursive=False, progress=False).shape[0] == 3 + len(bad)
    quick = scan_wfdb(tmp_path, leads=LEADS, progress=False).set_index('record').error  # header only: sizes, names, parsing
    assert {n for n in bad if quick[n]} == {'truncated', 'unknown_lead', 'garbage_header', 'longer_header'}

def test_scan_honours_nested_records_files(tmp_path):
    (tmp_path/'p00/p001').mkdir(parents=True); (tmp_path/'p01').mkdir()
    for n in ('a', 'b'): _copy(tmp_path/'p00/p001', n)
    _copy(tmp_path/'p00/p001', 'unlisted')
    _copy(tmp_path/'p01', 'c')
    (tmp_path/'RECORDS').write_text('p00/\np01/c\np01/gone\n')
    (tmp_path/'p00/RECORDS').write_text('p001/\n')
    (tmp_path/'p00/p001/RECORDS').write_text('a\nb\n')
    df = scan_wfdb(tmp_path, progress=False)
    assert list(df.record) == ['p00/p001/a', 'p00/p001/b', 'p01/c', 'p01/gone']
    assert df.error.isna().tolist() == [True, True, True, False]
    assert 'header file gone.hea not found' in df.error.iloc[3]

def test_scan_multi_segment_parts(shared, tmp_path):
    shutil.copytree(shared/'wfdb-samples/multi-segment/041s', tmp_path/'041s')
    df = scan_wfdb(tmp_path, read_signals=True, progress=False)
    assert list(df.record) == ['041s/041s'] and df.error.iloc[0] is None and df.leads.iloc[0] == ('III', 'I')
    (tmp_path/'041s/041s02.dat').write_bytes((tmp_path/'041s/041s02.dat').read_bytes()[:100])
    df = scan_wfdb(tmp_path, progress=False)
    assert 'segment 041s02: data file 041s02.dat is truncated' in df.error.iloc[0]

def test_scan_empty_and_missing_folder(tmp_path, capsys):
    df = scan_wfdb(tmp_path, progress=False)
    assert len(df) == 0 and 'scanned 0 records: 0 ok, 0 skipped' in capsys.readouterr().out
    with pytest.raises(FileNotFoundError): scan_wfdb(tmp_path/'nope')

# ---------------------------------------------------------------- (d) lead names and comments
LEAD_TABLE = [
    ('I', 'I'), ('i', 'I'), ('Lead I', 'I'), ('LEAD_I', 'I'), ('ECG I', 'I'), ('DI', 'I'), ('MLI', 'I'),
    ('II', 'II'), ('ii', 'II'), ('MLII', 'II'), ('ECG lead II', 'II'), ('DII', 'II'), ('ekg-ii', 'II'),
    ('III', 'III'), ('iii', 'III'), ('MLIII', 'III'), ('DIII', 'III'),
    ('AVR', 'aVR'), ('avr', 'aVR'), ('aVR', 'aVR'), (' aVR ', 'aVR'), ('AVL', 'aVL'), ('avl', 'aVL'), ('AVF', 'aVF'), ('aVf', 'aVF'),
    ('V1', 'V1'), ('v1', 'V1'), ('V-1', 'V1'), ('lead_v2', 'V2'), ('v3', 'V3'), ('V4', 'V4'), ('v5', 'V5'), ('V6', 'V6'),
    ('vx', None), ('vy', None), ('vz', None), ('V', None), ('MCL1', None), ('V4R', None), ('V7', None), ('-aVR', None),
    ('ECG 1', None), ('ECG', None), ('ABP', None), ('RESP', None), ('PLETH', None), ('col 0', None), ('IV', None),
    ('', None), (None, None), (3, None),
]

@pytest.mark.parametrize('name,want', LEAD_TABLE)
def test_normalise_lead_name(name, want):
    assert normalise_lead_name(name) == want

def test_normalise_round_trips_leads():
    assert all(normalise_lead_name(l) == l for l in LEADS)
    assert all(normalise_lead_name(l.upper()) == l and normalise_lead_name(l.lower()) == l for l in LEADS)

def test_parse_comments_dialects():
    assert parse_comments(['#Age: 60', '#Sex: Male', '#Dx: 426783006']) == {'age': 60, 'sex': 'Male', 'dx': ['426783006']}
    assert parse_comments(['<age>: 25  <sex>: M  <diagnoses>: (none)  <medications>: (none)']) == \
        {'age': 25, 'sex': 'M', 'diagnoses': None, 'medications': None}
    assert parse_comments(['Age: 61.5', 'age: 70', 'Asystole']) == {'age': 61.5, 'notes': ['Asystole']}
    assert parse_comments([]) == {}

def _corrupt_header_corpus(src, folder):
    "A real PTB-XL record copied under headers with one implausible field each"
    import shutil
    text = Path(f'{src}.hea').read_text().splitlines()
    name = Path(src).name
    cases = {'fs0': lambda l: l.replace(f'{name} 12 100 1000', f'{name} 12 0 1000', 1),
             'fsneg': lambda l: l.replace(f'{name} 12 100 1000', f'{name} 12 -100 1000', 1),
             'fsword': lambda l: l.replace(f'{name} 12 100 1000', f'{name} 12 fast 1000', 1),
             'fsmissing': lambda l: l.replace(f'{name} 12 100 1000', f'{name} 12', 1),
             'gain0': lambda l: l.replace('1000.0(0)/mV', '0(0)/mV', 1) if l.endswith(' II') else l,
             'ok': lambda l: l}
    for case, f in cases.items():
        d = folder/case; d.mkdir(parents=True)
        shutil.copy(f'{src}.dat', d/f'{name}.dat')
        (d/f'{name}.hea').write_text('\n'.join(f(l) for l in text) + '\n')
    return name, cases

def test_implausible_header_fields_are_errors_naming_the_field(tmp_path, shared):
    "fs 0 / negative / not a number, gain 0: a RecordError naming the field, a scan row with the reason, a skipped store row"
    from ecg_dml.data.store import build_store
    src = shared/'ptbxl'/'records100'/'00000'/'00001_lr'
    name, cases = _corrupt_header_corpus(src, tmp_path/'c')
    expect = {'fs0': 'sampling frequency is 0', 'fsneg': 'sampling frequency is -100', 'fsword': "sampling frequency is 'fast', not a number",
              'gain0': 'ADC gain of channel II is 0'}
    for case, msg in expect.items():
        with pytest.raises(RecordError, match=re.escape(msg)): read_record(tmp_path/'c'/case/name)
    df = scan_wfdb(tmp_path/'c', progress=False).set_index('record')
    assert len(df) == len(cases)                                   # no exception, one row per record
    for case, msg in expect.items(): assert msg in df.loc[f'{case}/{name}', 'error'], (case, df.loc[f'{case}/{name}', 'error'])
    assert df.loc[f'ok/{name}', 'error'] is None or pd.isna(df.loc[f'ok/{name}', 'error'])
    assert bool(df.loc[f'fsmissing/{name}', 'fs_default']) and not bool(df.loc[f'ok/{name}', 'fs_default'])
    assert df.loc[f'fsmissing/{name}', 'fs'] == 250                 # WFDB's default for a missing field, reported
    st = build_store(df.reset_index(), tmp_path/'store', n_workers=0, progress=False)
    sk = st.skipped
    assert len(st) + len(sk) == len(cases) and len(sk) == 5
    # read at WFDB's 250 Hz, the 1000 samples last 4 s: less than the store's minimum (half of 10 s), skipped, not padded
    assert sk[sk.record.str.contains('/fsmissing/')].reason.str.contains('lasts 4 s.*min_seconds').all()
    for case, msg in expect.items(): assert sk[sk.record.str.contains(f'/{case}/')].reason.str.contains(re.escape(msg)).all()
