"PTB-XL index, benchmark labels and splits, checked against known facts of the real data"
import ast, logging
from pathlib import Path
import numpy as np, pandas as pd, pytest
from ecg_dml.core import sample_dir
from ecg_dml.data.ptbxl import (TASKS, SUPERCLASSES, AGE_90_PLUS, PTBXLError, read_scp_statements, task_classes,
    ptbxl_index, label_counts, has_labels, label_matrix, fold_split, patient_split, leaking_patients,
    dropped_duplicate_ids, exclude_records)

DUPS = [137, 139, 140, 141, 142, 143, 145, 456, 458, 459, 461, 462]

@pytest.fixture(scope='module')
def full(shared): return ptbxl_index(shared/'ptbxl')

@pytest.fixture(scope='module')
def sample(): return ptbxl_index(sample_dir())

# The expected counts come from the shared CSV itself, read here without ecg_dml (the subset grows: no constants)
@pytest.fixture(scope='module')
def db(shared): return pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv', index_col='ecg_id')

@pytest.fixture(scope='module')
def stmts(shared): return pd.read_csv(shared/'ptbxl'/'scp_statements.csv', index_col=0)

def _class_counts(db, stmts, level='diagnostic_class'):
    "Records per class (`diagnostic_class` or `diagnostic_subclass`) by the benchmark's rule: any diagnostic statement"
    sets = [{stmts.loc[c, level] for c in ast.literal_eval(s) if stmts.loc[c, 'diagnostic'] == 1} for s in db.scp_codes]
    return pd.Series([c for s in sets for c in s]).value_counts()

def test_known_facts_of_the_shared_subset(full, db, stmts):
    "every CSV row indexed once, in order, with its signal; folds, patients and superdiagnostic counts as in the CSV"
    assert full.index.tolist() == db.index.tolist() and full.index.is_unique and full.has_signal.all()
    folds = full.strat_fold.value_counts().sort_index()
    assert folds.index.tolist() == list(range(1, 11)) and folds.tolist() == db.strat_fold.value_counts().sort_index().tolist()
    assert full.patient_id.nunique() == db.patient_id.nunique()
    assert (full.patient_id.value_counts() > 1).sum() == (db.patient_id.value_counts() > 1).sum() > 0
    assert label_counts(full).to_dict() == _class_counts(db, stmts).to_dict()
    assert full.patient_id.dtype == np.int64 and full.scp_codes.map(type).eq(dict).all()

def test_patients_never_cross_strat_folds(full, db):
    "PTB-XL puts all records of a patient in one fold; the data must show it"
    assert full.groupby('patient_id').strat_fold.nunique().max() == 1
    assert leaking_patients(full, full.strat_fold) == []
    multi = full.patient_id.value_counts()
    assert leaking_patients(full, fold_split(full)) == [] and (multi > 1).sum() == (db.patient_id.value_counts() > 1).sum() > 0

def test_labels_match_an_independent_reading_of_the_benchmark_rules(full, shared):
    st = pd.read_csv(shared/'ptbxl'/'scp_statements.csv', index_col=0)
    db = pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv', index_col='ecg_id')
    for i, s in db.scp_codes.items():
        codes = ast.literal_eval(s)
        dg = [c for c in codes if st.loc[c, 'diagnostic'] == 1]          # likelihood ignored, as the benchmark does
        assert full.at[i, 'diagnostic'] == sorted(set(dg))
        assert full.at[i, 'superdiagnostic'] == sorted({st.loc[c, 'diagnostic_class'] for c in dg})
        assert full.at[i, 'subdiagnostic'] == sorted({st.loc[c, 'diagnostic_subclass'] for c in dg})
        assert full.at[i, 'form'] == sorted(c for c in codes if st.loc[c, 'form'] == 1)
        assert full.at[i, 'rhythm'] == sorted(c for c in codes if st.loc[c, 'rhythm'] == 1)
        assert full.at[i, 'all_scp'] == sorted(codes)
    # a likelihood of 0 ("unknown") still makes a label: ecg_id 1 is {'NORM': 100, 'LVOLT': 0, 'SR': 0}
    assert (full.at[1, 'form'], full.at[1, 'rhythm'], full.at[1, 'superdiagnostic']) == (['LVOLT'], ['SR'], ['NORM'])
    zero_lik = [i for i, d in full.scp_codes.items() if any(v == 0 and st.loc[c, 'diagnostic'] == 1 for c, v in d.items())]
    assert zero_lik and all(full.at[i, 'diagnostic'] for i in zero_lik)

def test_task_classes_have_the_benchmark_sizes(shared):
    st = read_scp_statements(shared/'ptbxl')
    assert [len(task_classes(st, t)) for t in TASKS] == [5, 23, 44, 19, 12, 71]
    assert task_classes(st) == sorted(SUPERCLASSES)

def test_label_matrix(full, db, stmts, caplog):
    n, sup, subd = len(db), _class_counts(db, stmts), _class_counts(db, stmts, 'diagnostic_subclass')
    n_unlabelled = sum(not any(stmts.loc[c, 'diagnostic'] == 1 for c in ast.literal_eval(s)) for s in db.scp_codes)
    with caplog.at_level(logging.WARNING, logger='ecg_dml.data.ptbxl'):
        y, classes = label_matrix(full, 'superdiagnostic')
    assert y.dtype == np.float32 and y.shape == (n, 5) and classes == ['CD', 'HYP', 'MI', 'NORM', 'STTC']
    assert dict(zip(classes, y.sum(0).astype(int))) == sup.reindex(classes, fill_value=0).to_dict()
    assert (y.sum(1) == 0).sum() == n_unlabelled == (~has_labels(full)).sum() > 0   # no diagnostic statement at all
    assert f'{n_unlabelled} of {n} records have no superdiagnostic label' in caplog.text
    kept = full[has_labels(full)]
    assert label_matrix(kept)[0].sum(1).min() == 1
    y, classes = label_matrix(full, 'subdiagnostic', classes=task_classes(read_scp_statements(sample_dir()), 'subdiagnostic'))
    assert y.shape == (n, 23) and y[:, classes.index('IMI')].sum() == subd['IMI'] > 0
    assert y[:, classes.index('PMI')].sum() == subd.get('PMI', 0)
    no_pmi = full[~full.subdiagnostic.map(lambda s: 'PMI' in s)]
    y2, c2 = label_matrix(no_pmi, 'subdiagnostic', classes=classes)
    assert c2 == classes and y2[:, classes.index('PMI')].sum() == 0   # a class absent from the records keeps its column
    counts = label_counts(full, 'subdiagnostic')
    _, c = label_matrix(full, 'subdiagnostic', min_count=20)
    assert c == sorted(counts.index[counts > 20]) and 'RVH' not in c and 'IMI' in c
    y, c = label_matrix(full, 'all')
    assert c == sorted({k for d in full.scp_codes for k in d}) and (y.sum(1) == full.scp_codes.map(len)).all()
    with pytest.raises(ValueError, match='unknown task'): label_matrix(full, 'super')

def test_age_90_plus(full, db):
    old = full[full.age_90_plus]                                   # the CSV (v1.0.3) codes every age >= 90 as 300
    assert len(old) == (db.age == 300).sum() > 0 and (old.age_raw == AGE_90_PLUS).all() and (old.age == 90).all()
    young = full[~full.age_90_plus]
    assert young.age.equals(young.age_raw) and young.age.max() < 90
    assert full.age.max() == 90 and set(full.sex) == {0, 1}

def test_500hz_rows_without_files_are_kept_flagged_and_reported(shared, db, caplog):
    with caplog.at_level(logging.WARNING, logger='ecg_dml.data.ptbxl'):
        df = ptbxl_index(shared/'ptbxl', fs=500)
    assert len(df) == len(db) and df.has_signal.sum() == 488                       # 500 Hz files: ecg_id 1-500 only
    assert (df.index[df.has_signal] <= 500).all() and (df.index[~df.has_signal] > 500).all()
    assert f'{len(db) - 488} of {len(db)} records have no 500 Hz signal' in caplog.text and 'kept them' in caplog.text
    for p in df.path[df.has_signal]:
        assert Path(p).is_absolute() and p.endswith('_hr') and Path(p + '.dat').exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='ecg_dml.data.ptbxl'):
        kept = ptbxl_index(shared/'ptbxl', fs=500, drop_missing=True)
    assert len(kept) == 488 and kept.has_signal.all() and 'dropped them' in caplog.text

def test_sample_index(sample):
    assert len(sample) == 250 and sample.has_signal.all() and (sample.fs == 100).all()
    assert all(Path(p + '.hea').exists() and not p.endswith('.hea') for p in sample.path)
    df = ptbxl_index(sample_dir(), fs=500)
    assert df.has_signal.sum() == 10

def test_fold_split(full, db):
    f = db.strat_fold
    s = fold_split(full)
    assert s.value_counts().to_dict() == {'train': (f <= 8).sum(), 'valid': (f == 9).sum(), 'test': (f == 10).sum()}
    assert (s[full.strat_fold == 9] == 'valid').all() and (s[full.strat_fold <= 8] == 'train').all()
    s2 = fold_split(full, valid_folds=(7, 8), test_folds=(9, 10))
    assert s2.value_counts().to_dict() == {'train': (f <= 6).sum(), 'test': f.isin([9, 10]).sum(), 'valid': f.isin([7, 8]).sum()}
    with pytest.raises(ValueError, match='both valid and test'): fold_split(full, (9,), (9, 10))

def test_patient_split_has_no_leakage_and_is_seeded(full):
    n, k = len(full), full.patient_id.value_counts().max()     # a part overshoots by less than one patient's records
    for seed in range(5):
        s = patient_split(full, valid_pct=0.1, test_pct=0.2, seed=seed)
        assert leaking_patients(full, s) == []
        c = s.value_counts()
        assert 0.2 * n <= c['test'] < 0.2 * n + k and 0.1 * n <= c['valid'] < 0.1 * n + k
    assert patient_split(full, seed=3).equals(patient_split(full, seed=3))
    assert not patient_split(full, seed=3).equals(patient_split(full, seed=4))
    # the same split whatever the row order
    shuf = full.sample(frac=1, random_state=0)
    assert patient_split(shuf, seed=3).loc[full.index].equals(patient_split(full, seed=3))
    assert (patient_split(full, valid_pct=0, test_pct=0) == 'train').all()
    with pytest.raises(ValueError): patient_split(full, valid_pct=0.5, test_pct=0.5)

def test_patient_split_on_any_frame_with_missing_ids(full, caplog):
    "works for a non-PTB-XL frame: string ids, another column name, missing ids as their own patients"
    df = pd.DataFrame({'subject': full.patient_id.map(lambda p: f'P{p}').where(full.index % 50 != 0)}, index=full.index)
    with caplog.at_level(logging.WARNING, logger='ecg_dml.data.ptbxl'):
        s = patient_split(df, seed=0, patient_col='subject')
    assert 'records have no subject' in caplog.text
    assert leaking_patients(df, s, patient_col='subject') == []
    # measured by the true patient ids, only patients with an unknown-id record can straddle parts
    unknown = set(full.patient_id[df.subject.isna()])
    assert set(leaking_patients(full, s)) <= unknown
    naive = pd.Series(np.random.default_rng(0).choice(['train', 'test'], len(full)), index=full.index)
    assert len(leaking_patients(full, naive)) > 10          # the check does find leaks

def test_dropped_duplicates_are_excluded(full, shared):
    assert dropped_duplicate_ids() == DUPS == dropped_duplicate_ids(shared/'ptbxl-v101-dropped-duplicates')
    assert not full.index.isin(DUPS).any()                  # v1.0.3 no longer has them
    old = ptbxl_index(shared/'ptbxl-v101-dropped-duplicates', database='ptbxl_database_v101_rows.csv',
                      statements=shared/'ptbxl'/'scp_statements.csv')
    assert old.index.tolist() == DUPS and old.has_signal.all()
    mixed = pd.concat([full, old])
    clean = exclude_records(mixed, dropped_duplicate_ids())
    assert clean.index.equals(full.index)
    # why it matters: 145 and its kept twin 463 carry different patient ids, so a patient split cannot catch the leak
    assert old.at[145, 'patient_id'] != full.at[463, 'patient_id']
    assert old.at[137, 'patient_id'] == full.at[138, 'patient_id']

def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)): ptbxl_index(tmp_path)
    with pytest.raises(ValueError, match='100 or 500'): ptbxl_index(sample_dir(), fs=250)
    db = pd.read_csv(sample_dir()/'ptbxl_database.csv')
    db.loc[3, 'scp_codes'] = "{'NORM': 100.0"
    db.to_csv(tmp_path/'ptbxl_database.csv', index=False)
    with pytest.raises(PTBXLError, match=f"ecg_id {db.loc[3, 'ecg_id']}: unreadable scp_codes"):
        ptbxl_index(tmp_path, statements=sample_dir()/'scp_statements.csv')
    db.drop(columns='strat_fold').to_csv(tmp_path/'ptbxl_database.csv', index=False)
    with pytest.raises(PTBXLError, match="missing column.*strat_fold"):
        ptbxl_index(tmp_path, statements=sample_dir()/'scp_statements.csv')
