"The results study (benchmarks/study.py) in --quick mode: every table, plot and CSV, sane values, equal steps, resume"
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

from benchmarks import study, study_report   # the study's own constants, for the assertions (pytest.ini: pythonpath = .)

REPO = Path(__file__).resolve().parents[1]

PLOTS = [f'curves_{t}.png' for t in study.TASKS] + ['pretrain_curves.png', 'fit_curves.png', 'vs_baseline.png']
TABLES = [f'{t}.md' for t in study.TASKS] + ['decisions.md', 'vs_baseline.md', 'subgroup_gaps.md', 'timings.md']

def _run(out, *extra):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    r = subprocess.run([sys.executable, str(REPO/'benchmarks'/'study.py'), '--quick', '--out', str(out), *extra],
                       capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout

@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp('study')/'quick'
    return out, _run(out)

@pytest.mark.parametrize('how', [['benchmarks/study.py'], ['-m', 'benchmarks.study']])
def test_help(how):
    "the study runs as a file and as a module of the package `benchmarks`, from the repository root"
    r = subprocess.run([sys.executable, *how, '--help'], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and '--quick' in r.stdout and '--steps' in r.stdout and 'Resumable' in r.stdout

def test_estimate_prints_the_plan(tmp_path):
    out = _run(tmp_path/'est', '--estimate')
    assert 'estimated wall time' in out and 'plan:' in out and not (tmp_path/'est'/'run.json').exists()

def test_equal_steps_for_every_corpus():
    "the same optimizer steps whatever the corpus size (not the same epochs)"
    for n_train, bs in [(1381, 64), (1381 + 4000, 64), (170, 32), (15000, 64)]:
        epochs, steps = study.epochs_for(600, n_train, bs)
        per = n_train // bs
        assert steps == epochs * per and abs(steps - 600) <= per / 2 + 1e-9, (n_train, epochs, steps)
    assert study.epochs_for(600, 1381, 64)[0] > study.epochs_for(600, 5381, 64)[0]

def test_synthetic_corpus_is_cut_to_the_same_steps():
    "real + synthetic pretraining makes exactly the real-only arms' steps: whole epochs, the synthetic corpus cut to fill them"
    assert study.synthetic_budget(600, 1319, 20000, 64) == (2, 600, 17881)      # 2 epochs of 300 batches of 64
    for n_real, n_syn, bs, steps in [(1319, 4000, 64, 600), (1319, 20000, 64, 600), (1381, 15000, 32, 630), (170, 9000, 32, 100)]:
        epochs, got, used = study.synthetic_budget(steps, n_real, n_syn, bs)
        assert got == steps and epochs * ((n_real + used) // bs) == steps and 0 <= used <= n_syn, (n_real, n_syn, epochs, used)
        assert used >= min(n_syn, steps * bs - n_real) / 2   # the fewest epochs that fit: most of what the steps can read is used
    # too few synthetic ECGs to fill one more batch per epoch: all of them, epochs rounded like the real arms'
    assert study.synthetic_budget(6, 178, 8, 32) == (*study.epochs_for(6, 186, 32), 8)

def test_plan_seeds_and_protocols():
    a = study.parse_args(['--seeds', '0,1', '--methods', 'dml,simclr,3kg'])
    pre, ev = study.plan(a)
    assert pre == [('dml', 0), ('dml', 1), ('simclr', 0), ('simclr', 1), ('3kg', 0)]
    assert ('3kg', 0, 'linear') in ev and ('3kg', 0, 'finetune') not in ev and ('dml', 1, 'finetune') in ev
    assert {u for u in ev if u[0] in (study.BASELINE, study.HANDCRAFTED)} == {
        (study.BASELINE, 0, 'linear'), (study.BASELINE, 1, 'linear'), (study.BASELINE, 0, 'scratch'),
        (study.BASELINE, 1, 'scratch'), (study.HANDCRAFTED, 0, 'linear'), (study.HANDCRAFTED, 1, 'linear')}

def test_quick_outputs(quick):
    out, log = quick
    assert 'estimated wall time' in log and 'plan:' in log
    for f in ['results.csv', 'decisions.csv', 'decisions_per_seed.csv', 'vs_baseline.csv', 'subgroups.csv', 'gaps.csv',
              'pretrain_curves.csv', 'fit_curves.csv', 'timings.csv', 'run.json', 'report.md'] + \
             [f'tables/{t}' for t in TABLES] + [f'plots/{p}' for p in PLOTS]:
        assert (out/f).exists() and (out/f).stat().st_size > 0, f
    for p in PLOTS: assert (out/'plots'/p).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', p
    assert (out/'.gitignore').read_text().strip() == 'work/'

def test_quick_results_sane(quick):
    out, _ = quick
    R = pd.read_csv(out/'results.csv')
    assert set(R.method) == set(study.STUDY_METHODS) | {study.BASELINE, study.HANDCRAFTED}
    head = R[((R.metric == 'auroc') & R.target.isin(['macro', 'abnormal'])) | ((R.metric == 'mae') & (R.target == 'age'))]
    for (m, p), g in head.groupby(['method', 'protocol']):
        tasks, fr = (study.TASKS, study.FRACTIONS) if p == 'linear' else (study.FT_TASKS, study.FT_FRACTIONS)
        for t in tasks: assert sorted(g[g.task == t].fraction.round(4)) == list(fr), (m, p, t)
    assert set(R[R.method == study.BASELINE].protocol) == {'linear', 'scratch'}
    assert set(R[R.method == study.HANDCRAFTED].protocol) == {'linear'}
    assert set(R[R.method == 'dml'].protocol) == {'linear', 'finetune'} and set(R[R.method == '3kg'].protocol) == {'linear'}
    ok = R[(R.status == 'ok') & R.ci_low.notna()]
    auc = ok[ok.metric.isin(['auroc', 'auprc'])]
    assert len(auc) > 100 and auc.value.between(0, 1).all()
    assert (ok.ci_low <= ok.value + 1e-9).all() and (ok.value <= ok.ci_high + 1e-9).all()
    # the test set is folds 9 and 10 of the bundled sample, for every method and protocol
    from ecg_dml.core import sample_dir
    from ecg_dml.data.ptbxl import ptbxl_index
    meta = ptbxl_index(sample_dir(), drop_missing=True)
    assert set(head[head.task == 'age'].n.dropna().astype(int)) == {int(meta.strat_fold.isin(study.TEST_FOLDS).sum())}

def test_quick_decisions_and_curves(quick):
    out, _ = quick
    Q = pd.read_csv(out/'decisions.csv')
    assert list(dict.fromkeys(Q.question)) == [q for q, *_ in study_report.QUESTIONS]
    assert Q.verdict.str.match(r'^(yes|no|mixed|not measured)').all()
    D = pd.read_csv(out/'decisions_per_seed.csv')
    np.testing.assert_allclose(D['diff'], D.value - D.baseline_value, atol=1e-9)
    assert ((D.ci_low <= D['diff'] + 1e-9) & (D['diff'] <= D.ci_high + 1e-9)).all()
    V = pd.read_csv(out/'vs_baseline.csv')
    assert set(V.reference) == {'random-init / linear', 'random-init / scratch'}
    C = pd.read_csv(out/'pretrain_curves.csv')
    assert set(C.method) == set(study.STUDY_METHODS) and C.step.notna().all()
    run = json.loads((out/'run.json').read_text())
    T = pd.read_csv(out/'timings.csv'); P = T[T.stage == 'pretrain']
    assert P.steps.nunique() == 1 and int(P.steps.iloc[0]) == run['pretrain_steps']   # equal steps for every method
    assert (C.groupby(['method', 'seed']).step.max() == run['pretrain_steps']).all()
    F = pd.read_csv(out/'fit_curves.csv')
    assert set(F.protocol) == {'finetune', 'scratch'} and {'train_loss', 'valid_loss', 'valid_auroc', 'best'} <= set(F.columns)
    assert (F.groupby(['encoder', 'protocol', 'seed', 'fraction']).best.sum() == 1).all()   # one kept epoch per fit
    assert run['mode'] == 'quick' and run['units_skipped'] == 0 and run['units_run'] == len(run['unit_seconds'])
    assert {'command', 'versions', 'machine', 'seeds', 'stage_seconds', 'estimate_s', 'wall_seconds', 'split'} <= set(run)

def test_quick_resumes(quick):
    """A rerun skips all finished work; a unit whose result is missing (a killed run) is redone, and only that one --
    here in two worker processes (--jobs 2), which must give the same numbers as the single-process run"""
    out, _ = quick
    before = pd.read_csv(out/'results.csv')
    shutil.rmtree(out/'work'/'eval'/'simclr'/'seed0'/'linear')
    (out/'work'/'pretrain'/'pclr'/'seed0'/'done.json').unlink()   # as if killed after its last checkpoint
    _run(out, '--jobs', '2')
    run = json.loads((out/'run.json').read_text())
    ran = sorted((u['stage'], u['method'], u.get('protocol') if u['stage'] == 'evaluate' else '')
                 for u in run['unit_seconds'] if u['status'] == 'run')
    assert run['jobs'] == 2 and ran == [('evaluate', 'simclr', 'linear'), ('pretrain', 'pclr', '')], ran
    after = pd.read_csv(out/'results.csv')
    pd.testing.assert_frame_equal(before.drop(columns='value'), after.drop(columns='value'))
    np.testing.assert_allclose(before.value.fillna(-1), after.value.fillna(-1), atol=1e-6)   # seeded: same numbers
    r = subprocess.run([sys.executable, str(REPO/'benchmarks'/'study.py'), '--quick', '--out', str(out), '--n-boot', '20'],
                       capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode != 0 and 'other settings' in (r.stdout + r.stderr)   # never mixes settings in one folder

def test_adding_a_seed_runs_only_its_units(quick):
    out, _ = quick
    _run(out, '--seeds', '0,1', '--methods', 'dml')
    run = json.loads((out/'run.json').read_text())
    ran = {(u['stage'], u['method'], u['seed']) for u in run['unit_seconds'] if u['status'] == 'run'}
    assert ran == {('pretrain', 'dml', 1), ('evaluate', 'dml', 1), ('evaluate', study.BASELINE, 1), ('evaluate', study.HANDCRAFTED, 1)}
    D = pd.read_csv(out/'decisions_per_seed.csv')
    assert set(D[D.question.str.startswith('Does self-supervised DML beat an untrained')].seed) == {0, 1}

def test_synthetic_axis_gets_the_same_steps(quick):
    out, _ = quick
    _run(out, '--synthetic', '8', '--synthetic-methods', 'dml', '--methods', 'dml')
    T = pd.read_csv(out/'timings.csv').query("stage == 'pretrain'").set_index('method')
    n_real, used = T.loc['dml', 'n_train'], T.loc['dml+syn8', 'n_synthetic']
    assert T.loc['dml+syn8', 'n_train'] == n_real + used and 0 <= used <= 8
    assert (T.loc['dml+syn8', ['epochs', 'steps']].tolist()
            == list(study.synthetic_budget(int(T.loc['dml', 'steps']), n_real, 8, 32)[:2]))
    S = pd.read_csv(out/'vs_real.csv')
    assert set(S.method) == {'dml+syn8'} and set(S.reference) == {'dml / linear'}   # the corpus axis: linear probe

def test_compare_runs_pairs_the_same_units_on_the_same_test_ecgs(quick, tmp_path):
    """benchmarks/compare_runs.py: a longer pretraining (run B) against the quick run (A), unit by unit, each side's
    value the one its own run reported; a run against itself differs by 0; runs tested differently are refused"""
    from benchmarks import compare_runs
    a, _ = quick
    b = tmp_path/'longer'
    _run(b, '--methods', 'dml', '--steps', '12')
    r = subprocess.run([sys.executable, str(REPO/'benchmarks'/'compare_runs.py'), str(a), str(b)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    D = pd.read_csv(b/'vs_steps_6.csv')
    assert 'steps 12 minus steps 6' in r.stdout and len(D) == r.stdout.count('\n| dml |')
    assert set(D.method) == {'dml'} and set(D.protocol) == {'linear', 'finetune'} and set(D.seed) == {0}
    assert set(D.a) == {'steps 6'} and set(D.b) == {'steps 12'}
    Ra, Rb = pd.read_csv(a/'results.csv'), pd.read_csv(b/'results.csv')
    def reported(R, row):
        metric, target = study_report.HEADLINE[row.task]
        v = R.query('method == @row.method and protocol == @row.protocol and seed == @row.seed and task == @row.task '
                    'and metric == @metric and target == @target')
        return v[np.isclose(v.fraction, row.fraction)].value.item()
    for row in D.itertuples():
        np.testing.assert_allclose([row.baseline_value, row.value], [reported(Ra, row), reported(Rb, row)], atol=1e-9)
    np.testing.assert_allclose(D['diff'], D.value - D.baseline_value, atol=1e-12)
    same = compare_runs.compare_runs(a, a, methods=['dml'])
    assert len(same) >= len(D) and (same['diff'] == 0).all() and not same.significant.any()
    assert compare_runs.differing({'steps': 6, 'bs': 32}, {'steps': 12, 'bs': 32}) == {'steps': (6, 12)}
    with pytest.raises(SystemExit, match='test_folds'): compare_runs.differing({'test_folds': [9, 10]}, {'test_folds': [10]})
    with pytest.raises(SystemExit, match='not a study run'): compare_runs.run_settings(tmp_path)
