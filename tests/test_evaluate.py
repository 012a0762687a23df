"Evaluation: embeddings with ids, folds, nested label fractions, probes and trained protocols, evaluate(), subgroups, CLI"
import os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import mean_absolute_error, roc_auc_score
from ecg_dml.core import sample_dir
from ecg_dml.data.ptbxl import ptbxl_index, SUPERCLASSES
from ecg_dml.data.store import build_store, ECGStore
from ecg_dml.models.heads import EmbeddingModel, create_encoder
from ecg_dml.evaluate.embed import EmbeddingError, Embeddings, embed_dataset
from ecg_dml.evaluate.subgroups import age_bands, permutation_test, subgroup_metrics, subgroups
from ecg_dml.evaluate.protocols import (FRACTIONS, PROTOCOLS, EvaluateError, _encoder_head_splitter, cv_splits,
                                        evaluate, fit_model, label_fractions, linear_probe, load_data,
                                        resolve_encoder, run_protocol, seeded, task_targets, plot_learning_curves)

SMALL = dict(widths=(8, 16, 16, 32))   # a narrow ResNet1d-18: the same code paths at a fraction of the cost

@pytest.fixture(autouse=True, scope='module')
def one_torch_thread():
    "The test machine's 2 cores are shared with other jobs: one intra-op thread is ~3x faster here than two"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope='module')
def sample_store(tmp_path_factory):
    "The bundled 250 real PTB-XL records, first 2.5 s at 100 Hz"
    df = ptbxl_index(sample_dir(), drop_missing=True)
    return build_store(df, tmp_path_factory.mktemp('s')/'sample25', seconds=2.5, n_workers=0, progress=False)

@pytest.fixture(scope='module')
def ptbxl_shared(shared):
    "All shared PTB-XL records (100 Hz, 10 s, mV) as [N, 12, 1000] and their metadata, in the same order"
    c = shared/'ptbxl'/'compact'
    x = np.load(c/'X100_int16_uV.npy').transpose(0, 2, 1).astype(np.float32) / 1000
    ids = np.load(c/'ecg_id.npy')
    meta = ptbxl_index(shared/'ptbxl').loc[ids]
    db = pd.read_csv(shared/'ptbxl'/'ptbxl_database.csv')
    assert len(meta) == len(x) == len(db) and ids.tolist() == db.ecg_id.tolist()    # every CSV row, none skipped
    return x, meta

def test_embed_dataset_store_array_ids_and_file(sample_store, tmp_path):
    with seeded(0): enc = create_encoder('resnet1d18', **SMALL)
    E = embed_dataset(enc, sample_store, bs=64, chunk=70, device='cpu')
    assert E.values.shape == (250, 32) and (E.ids == sample_store.meta.ecg_id.to_numpy()).all()
    rows = np.array([249, 0, 17])
    x = sample_store.get_batch(rows)
    np.testing.assert_allclose(embed_dataset(enc, torch.from_numpy(x), ids=E.ids[rows]).values, E.loc(E.ids[rows]), atol=1e-4)
    Ep = embed_dataset(EmbeddingModel(enc, n_out=16), sample_store, rows=rows)
    np.testing.assert_allclose(np.linalg.norm(Ep.values, axis=1), 1, atol=1e-5)
    back = Embeddings.load(E.save(tmp_path/'e'))
    assert (back.values == E.values).all() and (back.ids == E.ids).all() and back.info['n'] == 250
    with pytest.raises(EmbeddingError, match='not unique'): Embeddings([1, 1], np.zeros((2, 3)))
    with pytest.raises(EmbeddingError, match='not embedded'): E.loc([-5])

def test_tasks_and_folds_on_sample(sample_store):
    meta = sample_store.meta
    rows, y, classes, kind = task_targets(meta, 'superdiagnostic')
    assert classes == list(SUPERCLASSES) and kind == 'multilabel' and y.sum(0).tolist() == [59, 88, 107, 86, 67]
    _, yb, cb, kb = task_targets(meta, 'norm_vs_abnormal')
    only_norm = meta.superdiagnostic.map(lambda s: s == "['NORM']").to_numpy()
    assert cb == ['abnormal'] and kb == 'binary' and (yb[:, 0] == ~only_norm).all()
    ra, ya, _, ka = task_targets(meta, 'age')
    assert ka == 'regression' and np.allclose(ya[:, 0], meta.age.to_numpy()[ra])
    splits = cv_splits(meta.strat_fold)
    assert [k for k, *_ in splits] == list(range(1, 11))
    for k, tr, va, te in splits:
        assert set(meta.strat_fold.iloc[te]) == {k} and set(meta.strat_fold.iloc[va]) == {k % 10 + 1}
        assert not set(meta.patient_id.iloc[tr]) & (set(meta.patient_id.iloc[te]) | set(meta.patient_id.iloc[va]))
    assert sorted(np.concatenate([te for *_, te in splits])) == list(range(250))
    with pytest.raises(EvaluateError, match="cv must be"): cv_splits(meta.strat_fold, 'kfold')

def _check_fractions(y, kind, seed):
    sub = label_fractions(y, kind, FRACTIONS, seed=seed)
    defined = [f for f in FRACTIONS if sub[f] is not None]
    assert defined == list(FRACTIONS[FRACTIONS.index(defined[0]):])     # undefined only at the small end
    for a, b in zip(defined[:-1], defined[1:]): assert np.isin(sub[a], sub[b]).all()   # nested
    for f in defined:
        n = len(sub[f]); assert n == (len(y) if f == 1 else max(1, round(f * len(y))))
        if kind != 'regression':
            ys = y[sub[f]] > 0
            assert ys.any(0).all() and (~ys).any(0).all()                # >= 1 positive and negative per class
    return sub

def test_label_fractions_nested_stratified_on_sample(sample_store):
    meta = sample_store.meta
    for task in ('superdiagnostic', 'norm_vs_abnormal', 'age'):
        rows, y, _, kind = task_targets(meta, task)
        k, tr, va, te = cv_splits(meta.strat_fold.iloc[rows])[0]
        for seed in (0, 1, 2):
            sub = _check_fractions(y[tr], kind, [seed, k])
            if kind != 'regression':                                       # stratified: far closer than random
                np.testing.assert_allclose(y[tr][sub[0.1]].mean(0), y[tr].mean(0), atol=0.03)
                np.testing.assert_allclose(y[tr][sub[0.5]].mean(0), y[tr].mean(0), atol=0.01)
            else: assert abs(np.median(y[tr][sub[0.1]]) - np.median(y[tr])) < 10
    a, b = (label_fractions(y[tr], 'regression', seed=s)[0.1] for s in (0, 1))
    assert not np.array_equal(a, b)

def test_label_fractions_on_shared_ptbxl_training_folds(ptbxl_shared):
    x, meta = ptbxl_shared
    rows, y, _, _ = task_targets(meta, 'superdiagnostic')
    tr = np.flatnonzero(meta.strat_fold.to_numpy()[rows] <= 8)
    for seed in range(5):
        sub = _check_fractions(y[tr], 'multilabel', seed)
        assert sub[0.01] is not None and len(sub[0.01]) == round(0.01 * len(tr))   # 1 % is enough rows here
        np.testing.assert_allclose(y[tr][sub[0.05]].mean(0), y[tr].mean(0), atol=0.02)
    impossible = np.zeros((50, 2), np.float32); impossible[:, 0] = 1             # class 0 has no negative
    assert all(v is None for v in label_fractions(impossible, 'multilabel').values())

def test_linear_probe_random_init_beats_chance_on_shared_ptbxl(ptbxl_shared):
    "NORM vs abnormal, 10-fold CV over strat_folds, linear probe on a random-init ResNet1d-18: better than chance"
    x, meta = ptbxl_shared
    ev = evaluate('resnet1d18', (x, meta), tasks=('norm_vs_abnormal',), fractions=(1.0,), n_boot=1000,
                  retrieval=False, subgroup_fraction=None, verbose=False, device='cpu')
    r = ev.results.query("fold == 0 and metric == 'auroc'").iloc[0]
    print(f"\nrandom-init resnet1d18 + linear probe, NORM vs abnormal, {len(meta)} PTB-XL ECGs, pooled 10-fold: "
          f"AUROC {r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]")
    n_labelled = int((meta.superdiagnostic.map(len) > 0).sum())   # records without a diagnostic statement are left out
    assert r.n_test == len(task_targets(meta, 'norm_vs_abnormal')[0]) == n_labelled < len(meta) and r.ci_low > 0.6, r
    p = ev.predictions
    assert r.value == pytest.approx(roc_auc_score(p.y, p.pred))

def test_failed_predictions_are_reported_not_raised():
    from ecg_dml.evaluate.protocols import _metric_rows
    rows = _metric_rows({'task': 't'}, np.array([[0.], [1.], [1.]]), np.array([[0.2], [np.nan], [0.9]]), ['a'], 10, 0, 5)
    assert len(rows) == 1 and rows[0]['status'].startswith('failed: ') and 'non-finite' in rows[0]['status']

def test_probe_regression_and_tiny_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10)); w = rng.normal(size=10)
    y = (X @ w)[:, None] + rng.normal(0, 0.1, (120, 1))
    p = linear_probe(X[:100], y[:100], X[100:], 'regression')
    assert mean_absolute_error(y[100:], p) < 0.3
    yc = np.zeros((100, 2)); yc[:3, 0] = 1; yc[::2, 1] = 1                      # 3 positives: 3-fold CV
    yc[0, 1] = 1
    pc = linear_probe(X[:100], yc, X[100:], 'multilabel')
    assert pc.shape == (20, 2) and ((pc > 0) & (pc < 1)).all()
    yc1 = np.zeros((100, 1)); yc1[5] = 1                                       # one positive: fixed C, no CV
    assert linear_probe(X[:100], yc1, X[100:], 'binary').shape == (20, 1)

def test_finetune_uses_discriminative_lrs_and_is_deterministic(sample_store):
    meta = sample_store.meta
    rows, y, _, kind = task_targets(meta, 'norm_vs_abnormal')
    k, tr, va, te = cv_splits(meta.strat_fold.iloc[rows], 'standard')[0]
    x = sample_store.get_batch(rows)
    from ecg_dml.models.heads import TaskModel
    with seeded(0): m = TaskModel(create_encoder('resnet1d18', **SMALL), 1)
    learn = fit_model(m, x, y, tr[:80], va, kind, lr=slice(1e-4, 1e-3), epochs=1, splitter=_encoder_head_splitter)
    lrs = [h['lr'] for h in learn.opt.hypers]
    assert len(lrs) == 2 and lrs[1] / lrs[0] == pytest.approx(10)
    with seeded(0): enc = create_encoder('resnet1d18', **SMALL)
    a, b = (run_protocol('finetune', kind, y, tr[:80], va, te, signals=x, encoder=enc, seed=3, epochs=2) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not all(torch.equal(p, q) for p, q in zip(enc.state_dict().values(), m.encoder.state_dict().values()))
    with seeded(0): enc0 = create_encoder('resnet1d18', **SMALL)
    assert all(torch.equal(p, q) for p, q in zip(enc.state_dict().values(), enc0.state_dict().values()))  # copied, not changed

def _small_eval(store, seed):
    return evaluate('resnet1d18', store, tasks=('superdiagnostic', 'age'), protocols=('linear', 'frozen_mlp', 'scratch'),
                    fractions=(0.1, 1.0), seeds=(seed,), test_folds=(9, 10), encoder_kwargs=SMALL, epochs=1,
                    mlp_epochs=3, n_boot=100, verbose=False, device='cpu')

def test_evaluate_deterministic_under_seed(sample_store):
    a, b, c = _small_eval(sample_store, 0), _small_eval(sample_store, 0), _small_eval(sample_store, 1)
    pd.testing.assert_frame_equal(a.results, b.results)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    pd.testing.assert_frame_equal(a.subgroups, b.subgroups)
    assert not np.allclose(a.predictions.pred, c.predictions.pred)
    assert set(a.results.protocol) == {'linear', 'frozen_mlp', 'scratch', 'retrieval'}

def test_eval_config_is_the_one_configuration(sample_store, tmp_path):
    "evaluate(config=EvalConfig) == evaluate(**keywords); the config is recorded, saved and read back; names are checked"
    from ecg_dml.evaluate.protocols import EvalConfig, TASK_KINDS, TASKS
    from ecg_dml.evaluate.results import load_results
    assert TASKS is TASK_KINDS and [t.name for t in EvalConfig().targets()] == list(TASK_KINDS)
    cfg = EvalConfig(tasks=('norm_vs_abnormal',), fractions=(1.0,), test_folds=(10,), n_boot=50, retrieval=False,
                     verbose=False, device='cpu')
    a = evaluate('xresnet1d18', sample_store, cfg)
    b = evaluate('xresnet1d18', sample_store, tasks=['norm_vs_abnormal'], fractions=[1.0], test_folds=[10], n_boot=50,
                 retrieval=False, verbose=False, device='cpu')
    c = evaluate('xresnet1d18', sample_store, cfg.to_dict(), n_boot=20)             # a dict of fields, one overridden
    pd.testing.assert_frame_equal(a.results, b.results)
    assert a.config == b.config and a.config['n_boot'] == 50 and c.config['n_boot'] == 20
    a.save(tmp_path/'a', plots=False)
    assert EvalConfig.of(a.config) == cfg == EvalConfig.of(load_results(tmp_path/'a').config)
    with pytest.raises(TypeError, match='n_bot'): evaluate('xresnet1d18', sample_store, cfg, n_bot=10)
    with pytest.raises(EvaluateError, match='unknown protocol'): evaluate('xresnet1d18', sample_store, protocols=('probe',))
    with pytest.raises(EvaluateError, match='differ from the folds'):
        evaluate({9: 'xresnet1d18', 10: 'xresnet1d18'}, sample_store, cfg)          # test_folds (10,) vs encoders' 9, 10

def test_evaluate_module_and_random_twin_full_grid(sample_store, tmp_path):
    "the notebook's slow cell, smaller: a given module and its random-init twin, every protocol, 5 fractions, 2 seeds"
    with seeded(0): module = create_encoder('resnet1d18', **SMALL)
    fracs = (0.004,) + FRACTIONS                                  # 0.4 % of ~225 training ECGs: 1, never enough
    ev = evaluate(module, sample_store, name='module', arch='resnet1d18', encoder_kwargs=SMALL, tasks=('superdiagnostic',),
                  protocols=PROTOCOLS, fractions=fracs, seeds=(0, 1), test_folds=(10,), epochs=1, mlp_epochs=3,
                  n_boot=100, verbose=False, device='cpu')
    R = ev.results
    plan = R[R.protocol != 'retrieval'].groupby('encoder').protocol.unique().map(set).to_dict()
    assert plan == {'module': {'linear', 'frozen_mlp', 'finetune'}, 'random-init': {'linear', 'frozen_mlp', 'scratch'}}
    und = R[R.status != 'ok']
    assert 0.004 in set(und.fraction) and set(und.fraction) <= {0.004, 0.01}
    assert und.status.str.startswith('undefined').all() and und.value.isna().all()
    ok = R.query("status == 'ok' and protocol != 'retrieval' and fold == 10 and metric == 'auroc' and target == 'macro'")
    assert {0.05, 0.1, 0.5, 1.0} <= set(ok.fraction) and 0.004 not in set(ok.fraction)
    assert len(ok) + len(und) == len(fracs) * 3 * 2 * 2                   # 3 protocols x 2 encoders x 2 seeds
    assert (ok.groupby('fraction').n_train.first().diff().dropna() > 0).all()    # more labels, more training rows
    assert ((ok.value > 0) & (ok.value < 1)).all() and (ok.ci_low <= ok.value).all()
    assert set(ev.subgroups.group) >= {'male', 'female', '50-75', '≥75'}
    assert set(R.query("protocol == 'retrieval'").metric) == {'recall@1', 'recall@5', 'recall@10', 'map@r'}
    assert {('module', 0), ('random-init', 0), ('random-init', 1)} <= set(ev.embeddings)
    np.testing.assert_array_equal(ev.embeddings[('module', 0)].values, ev.embeddings[('module', 1)].values)
    axs = plot_learning_curves(R)
    assert len(axs[0].lines) == 6
    files = ev.save(tmp_path/'out')
    names = {f.name for f in files}
    assert {'learning_curves.png', 'roc_pr_module_finetune_superdiagnostic.png', 'forest_random-init_scratch_superdiagnostic.png',
            'embedding_map_module.png', 'results.csv', 'subgroups.csv'} <= names
    assert all(f.stat().st_size > 0 for f in files)

def test_encoder_resolution_and_encoder_files(monkeypatch, tmp_path):
    from ecg_dml.models.io import CheckpointError, save_encoder
    with pytest.raises(EvaluateError, match='neither a registered encoder'): resolve_encoder(str(tmp_path/'none.pt'))
    monkeypatch.setitem(sys.modules, 'ecg_dml.pretrain', None)    # reading an encoder file needs no training stack
    cfg = {'encoder': 'resnet1d18', 'n_leads': 12, 'encoder_kw': SMALL, 'fs': 100.0}
    ck = save_encoder(create_encoder('resnet1d18', **SMALL), tmp_path/'run7.pt', cfg)
    label, enc, factory, cfg = resolve_encoder(ck)
    assert label == 'run7' and enc.n_features == 32 and cfg['fs'] == 100
    (tmp_path/'junk.pt').write_bytes(b'x')
    with pytest.raises(CheckpointError, match='junk.pt: '): resolve_encoder(tmp_path/'junk.pt')
    r = factory(0)
    assert [p.shape for p in r.parameters()] == [p.shape for p in enc.parameters()]
    assert not torch.equal(next(r.parameters()), next(enc.parameters()))
    wrapped = EmbeddingModel(create_encoder('resnet1d18', **SMALL))
    assert resolve_encoder(wrapped)[1] is wrapped.encoder                          # the encoder, not the projection
    with pytest.raises(EvaluateError, match='cannot use'): resolve_encoder(3.5)

def test_evaluate_a_pretrain_checkpoint(sample_store, tmp_path):
    "a real run of ecg_dml.pretrain (1 epoch): evaluate() loads encoder.pth and builds its random-init twin"
    from ecg_dml.pretrain import pretrain
    run = tmp_path/'dml_run'
    pretrain(sample_store, method='dml', encoder='resnet1d18', epochs=1, bs=32, encoder_kw=SMALL, seconds=2.5,
             out=run, progress=False, probe=False, device='cpu')
    for spec in (run/'encoder.pth', run):
        label, enc, factory, cfg = resolve_encoder(spec)
        assert label == 'dml_run' and cfg['encoder'] == 'resnet1d18' and enc.n_features == 32
    ev = evaluate(run/'encoder.pth', sample_store, tasks=('norm_vs_abnormal',), fractions=(1.0,), test_folds=(10,),
                  n_boot=50, verbose=False, device='cpu')
    assert set(ev.results.encoder) == {'dml_run', 'random-init'}
    a, b = ev.embeddings[('dml_run', 0)].values, ev.embeddings[('random-init', 0)].values
    assert a.shape == b.shape == (250, 32) and not np.allclose(a, b)

def test_open_ecgs_variants_and_the_deprecated_load_data(sample_store, tmp_path):
    from ecg_dml.data.sources import open_ecgs, DataError
    s, m = open_ecgs(sample_store)
    assert s is sample_store and len(m) == 250
    s2, m2 = open_ecgs(str(sample_store.path))
    assert isinstance(s2, ECGStore) and (m2.ecg_id == m.ecg_id).all()
    s3, m3 = open_ecgs(sample_dir(), seconds=2.5, dest=tmp_path/'st', progress=False)
    assert s3.shape == (250, 12, 250) and (m3.ecg_id.to_numpy() == m.ecg_id.to_numpy()).all()
    with pytest.raises(DataError, match='250 metadata rows'): open_ecgs((np.zeros((3, 12, 10)), m))
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no WFDB records'): open_ecgs(tmp_path/'empty', dest=tmp_path/'e')
    with pytest.warns(DeprecationWarning, match='open_ecgs'): s4, m4 = load_data(sample_store)
    assert s4 is sample_store and (m4.ecg_id == m.ecg_id).all()

def test_subgroups_on_real_predictions(sample_store):
    meta = sample_store.meta
    assert age_bands([300, 90, 74.9, 17]).astype(str).tolist() == ['≥75', '≥75', '50-75', '<18']
    rows, y, _, _ = task_targets(meta, 'norm_vs_abnormal')
    s = meta.age.to_numpy()[rows] + np.random.default_rng(0).normal(0, 5, len(rows))   # age as a (real) risk score
    G = subgroups(meta.iloc[rows])
    t = subgroup_metrics(y, s, G, ['auroc'], n_boot=300, n_perm=300)
    for grp in ('male', 'female', '50-75'):
        r = t[t.group == grp].iloc[0]; g = (G['sex'] == grp).to_numpy() if grp in ('male', 'female') else (G['age band'] == grp).to_numpy()
        assert r.value == pytest.approx(roc_auc_score(y[g, 0], s[g])) and r.n == g.sum()
        assert r['diff'] == pytest.approx(roc_auc_score(y[g, 0], s[g]) - roc_auc_score(y[~g, 0], s[~g]))
    assert t.query("group == '<18'").value.isna().all()                   # 2 records: too few for a metric
    rng = np.random.default_rng(1)
    ps = [permutation_test(y, s, rng.random(len(y)) < 0.5, n_perm=200, seed=i)['p_value'] for i in range(30)]
    assert 0.25 < np.mean(ps) < 0.75 and np.mean(np.array(ps) < 0.05) <= 0.15  # about uniform under the null

BIN = Path(sys.executable).parent
SCRIPT = "import sys\nfrom ecg_dml.evaluate.protocols import ecg_dml_evaluate\nif __name__ == '__main__': sys.exit(ecg_dml_evaluate())\n"

def test_cli_runs_and_writes_files(tmp_path, sample_store):
    "the installed console script if settings.ini declares it, else the same three-line wrapper pip would generate"
    args = ['--encoder', 'resnet1d18', '--encoder_kwargs', '{"widths": [8, 16, 16, 32]}', '--data', str(sample_store.path),
            '--out', str(tmp_path/'o'), '--tasks', 'norm_vs_abnormal,age', '--fractions', '0.5,1', '--test_folds', '9,10',
            '--n_boot', '50', '--device', 'cpu']
    exe = BIN/'ecg_dml_evaluate'
    if exe.exists(): cmd = [str(exe)]
    else: (tmp_path/'ecg_dml_evaluate.py').write_text(SCRIPT); cmd = [sys.executable, str(tmp_path/'ecg_dml_evaluate.py')]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'wrote' in r.stdout and 'norm_vs_abnormal' in r.stdout
    out = tmp_path/'o'
    for f in ('results.csv', 'predictions.csv', 'subgroups.csv', 'config.json', 'learning_curves.png',
              'roc_pr_random-init_linear_norm_vs_abnormal.png', 'forest_random-init_linear_age.png',
              'embedding_map_random-init.png', 'features_random-init_seed0.npz'):
        assert (out/f).stat().st_size > 0, f
    res = pd.read_csv(out/'results.csv')
    assert set(res.task) == {'norm_vs_abnormal', 'age'} and set(res.fold) == {0, 9, 10}
    assert set(res.query("protocol == 'linear'").fraction) == {0.5, 1.0}
    h = subprocess.run(cmd + ['--help'], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert h.returncode == 0 and '--fractions' in h.stdout and '--encoder_kwargs' in h.stdout
