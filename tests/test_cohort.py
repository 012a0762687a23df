"""Evaluating on a user's own labels (issue 20): PTB-XL's records and clinical columns treated as a hospital's cohort — a
table keyed by record name with its own patient ids — through evaluate(labels=, target=), every target kind, patient-
grouped folds, label fractions inside the training part, missing values counted, bad input refused or reported"""
import json, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ecg_dml.data.sources import DataError, join_labels, open_ecgs
from ecg_dml.models.heads import create_encoder
from ecg_dml.evaluate import run as run_mod
from ecg_dml.evaluate.embed import Embeddings, embed_dataset
from ecg_dml.evaluate.protocols import seeded
from ecg_dml.evaluate.run import ecg_dml_evaluate, evaluate
from ecg_dml.evaluate.targets import EvaluateError, target_values

SMALL = dict(widths=(8, 16, 16, 32))
QUIET = dict(n_boot=50, verbose=False, device='cpu')

@pytest.fixture(autouse=True, scope='module')
def one_torch_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope='module')
def db(shared):
    return pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv')

@pytest.fixture(scope='module')
def cohort(db):
    "A hospital-style table: record names (not PTB-XL ids), its own patient ids, clinical columns, findings as 0/1"
    scp = db.scp_codes.map(lambda s: set(eval(s)))
    return pd.DataFrame({'record': db.filename_lr.str.split('/').str[-1], 'patient': 'P' + db.patient_id.astype(int).astype(str),
                         'heart_axis': db.heart_axis, 'weight': db.weight, 'age': db.age.where(db.age < 300, 90),
                         'sex': db.sex.map({0: 'M', 1: 'F'}), 'site': db.site, 'fold': db.strat_fold,
                         'af': scp.map(lambda s: int('AFIB' in s)), 'lbbb': scp.map(lambda s: int('CLBBB' in s or 'ILBBB' in s))})

@pytest.fixture(scope='module')
def ecgs(shared, db):
    "The shared records as arrays with only their record names as metadata (what a user's own arrays would carry)"
    c = shared/'ptbxl'/'compact'
    x = np.load(c/'X100_int16_uV.npy').transpose(0, 2, 1).astype(np.float32) / 1000
    assert np.load(c/'ecg_id.npy').tolist() == db.ecg_id.tolist()
    return x, pd.DataFrame({'record': db.filename_lr.str.split('/').str[-1]})

@pytest.fixture(scope='module')
def feats(ecgs):
    "Random-init features of every record: the linear protocol then runs in seconds"
    x, meta = ecgs
    with seeded(0): enc = create_encoder('xresnet1d18')
    return Embeddings(np.arange(len(x)), embed_dataset(enc, x, bs=256, device='cpu').values, {'features': 'random-init'})

def test_every_kind_end_to_end(ecgs, feats, cohort, tmp_path):
    "binary, multiclass, multilabel and regression targets from the user's table, kinds inferred, the right metrics"
    csv = tmp_path/'cohort.csv'; cohort.to_csv(csv, index=False)
    want = {'sex': 'binary', 'heart_axis': 'multiclass', ('af', 'lbbb'): 'multilabel', 'weight': 'regression'}
    for target, kind in want.items():
        ev = evaluate(feats, ecgs, labels=csv, target=list(target) if isinstance(target, tuple) else target,
                      patient='patient', random_init=False, fractions=(0.1, 1.0), **QUIET)
        name = '+'.join(target) if isinstance(target, tuple) else target
        assert ev.config['task_kinds'] == {name: kind} and ev.config['cv_used'] == 'patient_kfold'
        pooled = ev.results.query('fold == 0 and fraction == 1.0 and protocol == "linear"')
        metrics = set(pooled.metric)
        assert metrics == ({'mae', 'rmse', 'pearson_r', 'r2'} if kind == 'regression' else {'auroc', 'auprc'}), (target, metrics)
        head = ev.summary()
        assert len(head) == 1 and np.isfinite(head[1.0]).all()
        if kind == 'regression':   # weight in kg: a probe of random features beats predicting the mean
            mae = pooled.query('metric == "mae"').value.iloc[0]
            assert 5 < mae < (cohort.weight - cohort.weight.mean()).abs().mean(), mae
        else:
            auc = pooled.query('metric == "auroc"')
            n_cls = {'binary': 0, 'multiclass': (cohort.heart_axis.value_counts() >= 2).sum(), 'multilabel': 2}[kind]
            assert set(auc.target) == ({'M'} if kind == 'binary' else {'macro'} | set(auc.target[auc.target != 'macro']))
            assert len(auc) == (1 if kind == 'binary' else n_cls + 1)   # binary: the positive class (last in sorted order)
            assert (auc.ci_low <= auc.value).all() and (auc.value <= auc.ci_high).all()
        used = len(ev.predictions.query('fraction == 1.0').ecg_id.unique())
        assert used + len(ev.excluded.query('task == @name')) == len(cohort)   # every record used or listed with its reason
    # the multiclass probabilities sum to 1 (one multinomial model)
    ev_mc = evaluate(feats, ecgs, labels=cohort, target='heart_axis', patient='patient', random_init=False, fractions=(1.0,), **QUIET)
    s = ev_mc.predictions.pivot_table(index='ecg_id', columns='target', values='pred').sum(1)
    assert np.allclose(s, 1, atol=1e-6) and ev_mc.excluded.reason.value_counts()['a class with fewer than 2 records'] == (cohort.heart_axis == 'ARAD').sum()

def test_patient_grouped_folds_never_leak(ecgs, feats, cohort):
    "the multi-ECG patients: every one of them tested in one fold only, for each kind's stratification"
    multi = cohort.patient.value_counts()
    multi = set(multi.index[multi > 1])
    assert len(multi) == cohort.patient.value_counts().gt(1).sum() > 50     # 104 in the 1,987 records
    by_id = cohort.patient.to_numpy()
    for target in ('sex', 'weight', 'heart_axis'):
        ev = evaluate(feats, ecgs, labels=cohort, target=target, patient='patient', random_init=False, fractions=(1.0,),
                      retrieval=False, **QUIET)
        p = ev.predictions[['ecg_id', 'fold']].drop_duplicates()
        folds = p.assign(patient=by_id[p.ecg_id.to_numpy()]).groupby('patient').fold.nunique()
        assert folds.max() == 1, target
        assert len(multi & set(folds.index)) > 30   # many multi-ECG patients are in the evaluation, each in one fold

def test_fractions_and_training_never_touch_the_test_part(ecgs, feats, cohort, monkeypatch):
    "every protocol call: train, valid and test rows disjoint and patient-disjoint; a 10 % fraction draws from training only"
    calls, orig = [], run_mod.run_protocol
    def spy(protocol, kind, y, train_rows, valid_rows, test_rows, **kw):
        calls.append((np.asarray(train_rows), np.asarray(valid_rows), np.asarray(test_rows)))
        return orig(protocol, kind, y, train_rows, valid_rows, test_rows, **kw)
    monkeypatch.setattr(run_mod, 'run_protocol', spy)
    ev = evaluate(feats, ecgs, labels=cohort, target='age', patient='patient', random_init=False, fractions=(0.1, 1.0),
                  n_folds=4, **QUIET)
    rows = np.flatnonzero(cohort.age.notna())   # positions of the task's rows, in the order evaluate uses
    pat = cohort.patient.to_numpy()[rows]
    assert len(calls) == 4 * 2
    full = {}
    for tr, va, te in calls:
        assert not (set(tr) & set(te)) and not (set(tr) & set(va)) and not (set(va) & set(te))
        assert not (set(pat[tr]) & set(pat[te]))
        full.setdefault(tuple(te), []).append(tr)
    for te, (small, big) in ((k, sorted(v, key=len)) for k, v in full.items()):
        assert set(small) <= set(big) and abs(len(small) - 0.1 * len(big)) <= 1   # the 10 % subset lies inside the training part

def test_missing_values_are_counted_not_hidden(ecgs, feats, cohort):
    ev = evaluate(feats, ecgs, labels=cohort, target='weight', patient='patient', random_init=False, fractions=(1.0,),
                  retrieval=False, **QUIET)
    ex = ev.excluded.query('task == "weight"')
    assert (ex.reason == 'missing value').sum() == cohort.weight.isna().sum() > 100
    n_test = ev.results.query('fold == 0 and metric == "mae"').n_test.iloc[0]
    assert n_test == cohort.weight.notna().sum()
    assert sorted(ex.record) == sorted(cohort.record[cohort.weight.isna()])

def test_bad_input(ecgs, feats, cohort):
    kw = dict(patient='patient', random_init=False, fractions=(1.0,), **QUIET)
    with pytest.raises(EvaluateError, match="no column 'lvef'"): evaluate(feats, ecgs, labels=cohort, target='lvef', **kw)
    with pytest.raises(EvaluateError, match="no column 'ward'"): evaluate(feats, ecgs, labels=cohort, target='age', subgroups=['ward'], **kw)
    with pytest.raises(EvaluateError, match='nothing to predict'):
        evaluate(feats, ecgs, labels=cohort.assign(k=4.1), target='k', **kw)
    with pytest.raises(EvaluateError, match="1 class"):
        evaluate(feats, ecgs, labels=cohort.assign(dx=['a'] * (len(cohort) - 1) + ['b']), target='dx', **kw)
    with pytest.raises(DataError, match='no record column'): evaluate(feats, ecgs, labels=cohort.drop(columns='record'), target='age', **kw)
    with pytest.raises(DataError, match='more than once'):
        evaluate(feats, ecgs, labels=pd.concat([cohort, cohort.head(2)]), target='age', **kw)
    leaky = cohort.assign(split=np.where(np.arange(len(cohort)) % 2, 'train', 'test'))
    with pytest.raises(EvaluateError, match='more than one'): evaluate(feats, ecgs, labels=leaky, target='age', split='split', **kw)
    # rows of the table whose record is not in the data: reported, the rest evaluated
    extra = pd.concat([cohort, pd.DataFrame({'record': ['99999_lr', 'ghost'], 'age': [50, 60], 'patient': ['X', 'Y']})])
    ev = evaluate(feats, ecgs, labels=extra, target='age', **kw)
    lost = ev.excluded.query('task == ""')
    assert sorted(lost.record) == ['99999_lr', 'ghost'] and set(lost.reason) == {'no ECG of this name in the data'}
    # ECGs without a row in the table: left out with that reason
    ev = evaluate(feats, ecgs, labels=cohort.iloc[100:], target='age', **kw)
    assert (ev.excluded.reason == 'no row in the labels table').sum() == 100
    joined, _ = join_labels(ecgs[1], cohort.iloc[100:])   # the printed note counts them the same way
    assert 'no row in the labels table (100)' in target_values(joined, 'age').note

def test_split_column_and_subgroups_on_any_column(ecgs, feats, cohort):
    "a fixed held-out set from the user's split column (no valid rows: validation drawn by patient) and subgroups on site"
    t = cohort.assign(split=np.where(cohort.fold == 10, 'test', 'train'))
    ev = evaluate(feats, ecgs, labels=t, target='sex', split='split', patient='patient', random_init=False,
                  fractions=(1.0,), subgroups=['site', 'age band'], **QUIET)
    assert ev.config['cv_used'] == 'split'
    tested = ev.predictions.ecg_id.unique()
    assert sorted(tested) == sorted(np.flatnonzero(cohort.fold == 10))
    sg = ev.subgroups
    assert {'site', 'age band', 'all'} <= set(sg.attribute) and sg.query('attribute == "site"').p_value.notna().any()

def test_ptbxl_tasks_are_presets_of_the_same_path(shared, ecgs, feats, cohort, db):
    "norm_vs_abnormal on the PTB-XL root (built-in) equals the same task read from a user's table with its fold column"
    from ecg_dml.data.ptbxl import ptbxl_index
    meta = ptbxl_index(shared/'ptbxl').loc[db.ecg_id].reset_index()
    a = evaluate(Embeddings(meta.ecg_id.to_numpy(), feats.values), (ecgs[0], meta), tasks=('norm_vs_abnormal',),
                 random_init=False, fractions=(1.0,), test_folds=(9, 10), **QUIET)
    t = cohort.assign(superdiagnostic=meta.superdiagnostic.map(str).to_numpy())
    b = evaluate(feats, ecgs, labels=t, tasks=('norm_vs_abnormal',), folds='fold', patient='patient', random_init=False,
                 fractions=(1.0,), test_folds=(9, 10), **QUIET)
    cols = ['protocol', 'task', 'fold', 'metric', 'target', 'value', 'ci_low', 'ci_high', 'n_train', 'n_test']
    pd.testing.assert_frame_equal(a.results[cols].reset_index(drop=True), b.results[cols].reset_index(drop=True))

def test_trained_protocols_multiclass_and_regression(ecgs, cohort):
    "scratch and frozen_mlp on a multiclass and a regression target: cross-entropy / MSE paths, probabilities, no crash"
    x, meta = ecgs
    keep = np.flatnonzero(cohort.heart_axis.notna())[:300]
    with seeded(0): enc = create_encoder('resnet1d18', **SMALL)
    ev = evaluate(enc, (x[keep, :, :250], meta.iloc[keep]), labels=cohort, target='heart_axis', patient='patient',
                  protocols=('frozen_mlp', 'finetune', 'scratch'), fractions=(1.0,), n_folds=3, epochs=1, mlp_epochs=2,
                  min_class_size=10, arch='resnet1d18', encoder_kwargs=SMALL, test_folds=(1,), **QUIET)
    p = ev.predictions
    s = p.pivot_table(index=['encoder', 'protocol', 'ecg_id'], columns='target', values='pred').sum(1)
    assert np.allclose(s, 1, atol=1e-5) and set(p.protocol) == {'frozen_mlp', 'finetune', 'scratch'}
    assert (ev.results.query('metric == "auroc" and target == "macro"').value.between(0, 1)).all()
    ev = evaluate(enc, (x[keep, :, :250], meta.iloc[keep]), labels=cohort, target='age', patient='patient', protocols=('scratch',),
                  fractions=(1.0,), n_folds=3, epochs=1, arch='resnet1d18', encoder_kwargs=SMALL, test_folds=(1,), retrieval=False, **QUIET)
    assert ev.results.query('metric == "mae"').value.between(1, 60).all()

def test_cli_on_a_wfdb_folder_and_a_csv(shared, cohort, tmp_path, capsys):
    "ecg_dml_evaluate --data FOLDER --labels cohort.csv --target heart_axis --kind multiclass --patient patient --subgroups sex,site"
    csv = tmp_path/'cohort.csv'; cohort.to_csv(csv, index=False)
    out = tmp_path/'eval'
    ecg_dml_evaluate(encoder='xresnet1d18', data=str(shared/'ptbxl'/'records100'), labels=str(csv), target='heart_axis',
                     kind='multiclass', min_class_size=10, patient='patient', subgroups='sex,site', fractions='1',
                     n_boot=50, retrieval=False, out=str(out), plots=False)
    printed = capsys.readouterr().out
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['task_kinds'] == {'heart_axis': 'multiclass'} and cfg['target'] == 'heart_axis'
    ex = pd.read_csv(out/'excluded.csv')
    assert (ex.reason == 'missing value').sum() == cohort.heart_axis.isna().sum()
    assert 'heart_axis: ' in printed and 'missing value' in printed
    assert {'sex', 'site'} <= set(pd.read_csv(out/'subgroups.csv').attribute)
