"The results study (benchmarks/study.py) in --quick mode: every table, plot and CSV, sane values, and resumability"
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

TASKS = ('superdiagnostic', 'norm_vs_abnormal', 'age')
FRACTIONS = (0.01, 0.05, 0.1, 0.5, 1.0)
PLOTS = ['curves_superdiagnostic.png', 'curves_norm_vs_abnormal.png', 'curves_age.png', 'subgroup_gaps.png', 'vs_baseline.png']
QUICK_FOLD = 10   # benchmarks/study.py's QUICK['test_folds']
TABLES = [f'{t}.md' for t in TASKS] + ['subgroup_gaps.md', 'vs_baseline.md', 'head_to_head.md', 'timings.md']

def _run(repo, out, *extra):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    r = subprocess.run([sys.executable, str(repo/'benchmarks'/'study.py'), '--quick', '--out', str(out), *extra],
                       capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

@pytest.fixture(scope='module')
def quick(repo, tmp_path_factory):
    out = tmp_path_factory.mktemp('study')/'quick'
    return out, _run(repo, out)

def test_help(repo):
    r = subprocess.run([sys.executable, str(repo/'benchmarks'/'study.py'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and '--quick' in r.stdout and '--synthetic' in r.stdout and 'Resumable' in r.stdout

def test_estimate_only(repo, tmp_path):
    out = _run(repo, tmp_path/'est', '--estimate')
    assert 'estimated wall time' in out and not (tmp_path/'est'/'run.json').exists()

def test_quick_outputs(quick):
    out, log = quick
    assert 'estimated wall time' in log
    for f in ['results.csv', 'results_per_fold.csv', 'subgroups.csv', 'gaps.csv', 'vs_baseline.csv', 'head_to_head.csv', 'timings.csv',
              'run.json', 'report.md'] + [f'tables/{t}' for t in TABLES] + [f'plots/{p}' for p in PLOTS]:
        assert (out/f).exists() and (out/f).stat().st_size > 0, f
    for p in PLOTS: assert (out/'plots'/p).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', p
    assert (out/'.gitignore').read_text().strip() == 'work/'

def test_quick_results_sane(quick):
    out, _ = quick
    R = pd.read_csv(out/'results.csv')
    assert list(R.columns[:9]) == ['method', 'protocol', 'fraction', 'task', 'target', 'metric', 'value', 'ci_low', 'ci_high']
    assert 'n' in R.columns
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'benchmarks'))
    from study import STUDY_METHODS, QUICK
    methods = set(STUDY_METHODS) | {'random-init'}
    assert set(R.method) == methods
    # every method x protocol x task x fraction has its headline row (a value, or 'undefined' with the reason)
    head = R[((R.metric == 'auroc') & R.target.isin(['macro', 'abnormal'])) | ((R.metric == 'mae') & (R.target == 'age'))]
    for (m, p), g in head.groupby(['method', 'protocol']):
        for t in TASKS:
            assert sorted(g[g.task == t].fraction.round(4)) == list(FRACTIONS), (m, p, t)
    assert set(R[R.method == 'random-init'].protocol) == {'linear', 'frozen_mlp', 'scratch'}
    assert set(R[R.method == 'dml-euclidean'].protocol) == {'linear', 'frozen_mlp', 'finetune'}
    ok = R[(R.status == 'ok') & R.ci_low.notna()]
    assert len(ok) > 1000
    auc = ok[ok.metric.isin(['auroc', 'auprc'])]
    assert auc.value.between(0, 1).all() and auc.ci_low.between(0, 1).all() and auc.ci_high.between(0, 1).all()
    assert (ok.ci_low <= ok.value + 1e-9).all() and (ok.value <= ok.ci_high + 1e-9).all()   # CIs bracket estimates
    mae = ok[ok.metric == 'mae']
    assert len(mae) and mae.value.between(0, 60).all()
    assert (R[R.status != 'ok'].value.isna()).all()
    # pooled rows pool the test fold(s): n = records with labels in the tested folds
    from ecg_dml.core import sample_dir
    from ecg_dml.data.ptbxl import ptbxl_index
    meta = ptbxl_index(sample_dir(), drop_missing=True)
    assert set(head[head.task == 'age'].n.dropna().astype(int)) == {int((meta.strat_fold == QUICK['test_folds'][0]).sum())}
    gaps = R[R.metric.isin(['sex_gap', 'age_gap'])]
    assert set(gaps.method) == methods and gaps[gaps.metric == 'sex_gap'].value.notna().all()
    S = pd.read_csv(out/'subgroups.csv').query("attribute == 'sex' and metric in ('auroc', 'mae')")
    S = S[S.task.map({'age': 'mae'}).fillna('auroc') == S.metric]
    w = S.pivot_table(index=['method', 'protocol', 'task'], columns='group', values='value', dropna=False)
    sex = gaps[gaps.metric == 'sex_gap'].set_index(['method', 'protocol', 'task']).value   # female - male
    np.testing.assert_allclose(sex.to_numpy(), (w.female - w.male).reindex(sex.index).to_numpy(), atol=1e-9)

def test_quick_tables_and_companions(quick):
    out, _ = quick
    md = (out/'tables'/'superdiagnostic.md').read_text()
    assert md.startswith('| method') and 'dml-correlation' in md and 'random-init' in md and '100%' in md
    V = pd.read_csv(out/'vs_baseline.csv')
    assert set(V.baseline) == {'random-init / linear', 'random-init / frozen_mlp', 'random-init / scratch'}
    assert ((V.ci_low <= V['diff'] + 1e-9) & (V['diff'] <= V.ci_high + 1e-9)).all()
    np.testing.assert_allclose(V['diff'], V.value - V.baseline_value, atol=1e-9)
    H = pd.read_csv(out/'head_to_head.csv')   # e.g. correlation minus Euclidean mining, per protocol, paired
    h = H[(H.method == 'dml-correlation') & (H.protocol == 'linear')]
    assert set(h.baseline) == {'dml-euclidean / linear', 'simclr / linear'}   # mining distance; DML vs SimCLR
    assert set(h[h.baseline == 'dml-euclidean / linear'].task) == set(TASKS)
    np.testing.assert_allclose(H['diff'], H.value - H.baseline_value, atol=1e-9)
    L = V.set_index(['method', 'protocol', 'task', 'fraction']).value   # the same method's value as in vs_baseline
    np.testing.assert_allclose(H.set_index(['method', 'protocol', 'task', 'fraction']).value,
                               L.reindex(H.set_index(['method', 'protocol', 'task', 'fraction']).index), atol=1e-9)
    S = pd.read_csv(out/'subgroups.csv')
    assert {'sex', 'age band', 'all'} <= set(S.attribute) and S.p_value.dropna().between(0, 1).all()
    run = json.loads((out/'run.json').read_text())
    assert run['mode'] == 'quick' and run['units_skipped'] == 0 and run['units_run'] == len(run['unit_seconds'])
    assert {'command', 'versions', 'machine', 'seeds', 'stage_seconds', 'estimate_s', 'wall_seconds'} <= set(run)
    assert run['versions']['torch'] and run['machine']['cpu_count'] >= 1
    T = pd.read_csv(out/'timings.csv')
    assert set(T.stage) == {'pretrain', 'evaluate'} and (T.seconds > 0).all()

def test_quick_resumes(repo, quick):
    """A rerun skips all finished work; a unit whose result is missing (a killed run) is redone, and only that one —
    here in two worker processes (--jobs 2), which must give the same numbers as the single-process run"""
    out, _ = quick
    before = pd.read_csv(out/'results.csv')
    shutil.rmtree(out/'work'/'eval'/'simclr'/f'fold{QUICK_FOLD}'/'linear')
    (out/'work'/'pretrain'/'pclr'/f'fold{QUICK_FOLD}'/'done.json').unlink()   # as if killed after its last checkpoint
    _run(repo, out, '--jobs', '2')
    run = json.loads((out/'run.json').read_text())
    assert run['jobs'] == 2
    ran = sorted((u['stage'], u['method'], u.get('protocol') if u['stage'] == 'evaluate' else '')
                 for u in run['unit_seconds'] if u['status'] == 'run')
    assert ran == [('evaluate', 'simclr', 'linear'), ('pretrain', 'pclr', '')], ran
    after = pd.read_csv(out/'results.csv')
    pd.testing.assert_frame_equal(before.drop(columns='value'), after.drop(columns='value'))
    np.testing.assert_allclose(before.value.fillna(-1), after.value.fillna(-1), atol=1e-6)   # seeded: same numbers
    r = subprocess.run([sys.executable, str(repo/'benchmarks'/'study.py'), '--quick', '--out', str(out), '--n-boot', '20'],
                       capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode != 0 and 'other settings' in (r.stdout + r.stderr)   # never mixes settings in one folder

def test_quick_adds_synthetic_units(repo, quick):
    """The pretraining-corpus axis added to a finished study: only the `+synN` units run (real units are reused), the
    synthetic pretraining sees the real training ECGs plus N synthetic ones, and vs_real pairs each with its real-only twin"""
    out, _ = quick
    n_syn = 16
    _run(repo, out, '--synthetic', str(n_syn), '--synthetic-methods', 'dml-euclidean')
    run = json.loads((out/'run.json').read_text())
    ran = sorted({(u['stage'], u['method']) for u in run['unit_seconds'] if u['status'] == 'run'})
    assert ran == [('evaluate', f'dml-euclidean+syn{n_syn}'), ('pretrain', f'dml-euclidean+syn{n_syn}')], ran
    real = json.loads((out/'work'/'pretrain'/'dml-euclidean'/f'fold{QUICK_FOLD}'/'done.json').read_text())
    syn = json.loads((out/'work'/'pretrain'/f'dml-euclidean+syn{n_syn}'/f'fold{QUICK_FOLD}'/'done.json').read_text())
    assert syn['n_train'] == real['n_train'] + n_syn
    assert run['synthetic'] == n_syn and run['synthetic_generation']['n'] == n_syn and run['synthetic_generation']['seconds'] > 0
    assert len(run['invocations']) >= 3 and run['total_wall_seconds'] == pytest.approx(sum(i['wall_seconds'] for i in run['invocations']), abs=0.2)
    V = pd.read_csv(out/'vs_real.csv')
    assert set(V.method) == {f'dml-euclidean+syn{n_syn}'} and set(V.baseline) == {f'dml-euclidean / {p}' for p in ('linear', 'frozen_mlp', 'finetune')}
    np.testing.assert_allclose(V['diff'], V.value - V.baseline_value, atol=1e-9)
    R = pd.read_csv(out/'results.csv')
    for p in ('linear', 'frozen_mlp', 'finetune'):   # the paired table's values are the pooled results' values
        r = R[(R.method == 'dml-euclidean') & (R.protocol == p) & (R.task == 'age') & (R.metric == 'mae') & (R.fraction == 1.0)]
        v = V[(V.protocol == p) & (V.task == 'age') & (V.fraction == 1.0)]
        np.testing.assert_allclose(v.baseline_value.to_numpy(), r.value.to_numpy(), atol=1e-6)
    assert (out/'plots'/'vs_real.png').read_bytes()[:4] == b'\x89PNG' and (out/'tables'/'vs_real.md').exists()

def test_jobs_failure_names_the_unit(repo, tmp_path):
    "A unit that fails in a worker process stops the run at once with an error naming the unit and the cause"
    r = subprocess.run([sys.executable, str(repo/'benchmarks'/'study.py'), '--quick', '--jobs', '2', '--methods', 'dml-euclidean',
                        '--encoder', 'no_such_encoder', '--out', str(tmp_path/'fail')], capture_output=True, text=True,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    err = r.stdout + r.stderr
    assert r.returncode != 0 and 'failed in a worker process' in err and 'no_such_encoder' in err, err[-2000:]
    assert 'fold 10' in err and not (tmp_path/'fail'/'run.json').exists()
