"The bundled PTB-XL sample: complete, readable, real (byte-identical to PTB-XL), covering classes, folds, patients"
import ast, hashlib
import numpy as np, pandas as pd, wfdb
from ecg_dml.core import sample_dir, LEADS

def _db(): return pd.read_csv(sample_dir()/'ptbxl_database.csv', index_col='ecg_id')

def test_every_row_has_its_files_and_reads():
    db, root = _db(), sample_dir()
    assert len(db) == 250 and db.index.is_unique
    for f in db.filename_lr:
        x, fields = wfdb.rdsamp(str(root/f))
        assert x.shape == (1000, 12) and fields['fs'] == 100
        assert [s.upper() for s in fields['sig_name']] == [l.upper() for l in LEADS]
        assert np.isfinite(x).all()
    hr = sorted((root/'records500').rglob('*.hea'))
    assert len(hr) == 10
    for h in hr:
        x, fields = wfdb.rdsamp(str(h.with_suffix('')))
        assert x.shape == (5000, 12) and fields['fs'] == 500
    records = (root/'RECORDS').read_text().split()
    assert records == db.filename_lr.tolist()

def test_no_stray_files():
    "every signal file in the sample belongs to a row of the CSV"
    db, root = _db(), sample_dir()
    expected = {f'{f}{e}' for f in db.filename_lr for e in ('.hea', '.dat')}
    expected |= {f'{f}{e}' for f in db.filename_hr if (root/f'{f}.hea').exists() for e in ('.hea', '.dat')}
    found = {str(p.relative_to(root)) for p in root.glob('records*/**/*') if p.is_file()}
    assert found == expected

def test_coverage_of_classes_folds_patients():
    db, root = _db(), sample_dir()
    st = pd.read_csv(root/'scp_statements.csv', index_col=0)
    st = st[st.diagnostic == 1]
    sup = [{st.loc[c, 'diagnostic_class'] for c in ast.literal_eval(s) if c in st.index} for s in db.scp_codes]
    counts = pd.Series([c for s in sup for c in s]).value_counts()
    assert set(counts.index) == {'NORM', 'MI', 'STTC', 'CD', 'HYP'} and counts.min() >= 40
    assert sorted(db.strat_fold.unique()) == list(range(1, 11))
    assert (db.patient_id.value_counts() > 1).sum() >= 10   # patients with several ECGs, for patient-aware code
    assert (db.age == 300).any()                             # PTB-XL's code for age >= 90 is present

def test_sample_is_byte_identical_to_ptbxl(shared):
    root, src = sample_dir(), shared/'ptbxl'
    for p in root.glob('records*/**/*'):
        if p.is_file():
            q = src/p.relative_to(root)
            assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(q.read_bytes()).digest(), p
    assert (root/'scp_statements.csv').read_bytes() == (src/'scp_statements.csv').read_bytes()
    read = lambda p: pd.read_csv(p, index_col='ecg_id', dtype=str, keep_default_na=False)
    mine, full = read(root/'ptbxl_database.csv'), read(src/'ptbxl_database.csv')
    pd.testing.assert_frame_equal(mine, full.loc[mine.index])

def test_make_sample_reproduces_the_bundle(shared, tmp_path, repo):
    "scripts/make_sample.py is the recipe of the bundle: rerunning it gives the same records"
    import runpy
    mod = runpy.run_path(str(repo/'scripts'/'make_sample.py'))
    sub = mod['main'](src=shared/'ptbxl', dest=tmp_path/'ptbxl')
    assert sub.index.tolist() == _db().index.tolist()
    assert (tmp_path/'ptbxl'/'ptbxl_database.csv').read_bytes() == (sample_dir()/'ptbxl_database.csv').read_bytes()
