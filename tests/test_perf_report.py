"""The performance report (benchmarks/perf_report.py) in --quick mode: every table, plot and CSV is produced with sane
contents (positive finite speeds, all batch sizes, agreement with the brute-force loop references), and the loop
reference helpers catch a wrong miner. Speeds are never compared with thresholds: the machine is shared."""
import json, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO/'benchmarks'/'perf_report.py'
TABLES = ('reading', 'store_scaling', 'views', 'mining', 'loss', 'step', 'memory', 'growth')
PLOTS = ('batch_scaling', 'step_breakdown', 'reading', 'store_scaling')

def _module():
    from benchmarks import perf_report   # pytest.ini: pythonpath = . (the repository root)
    return perf_report

@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp('perf')/'quick'
    r = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out', str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, {t: pd.read_csv(out/f'{t}.csv') for t in TABLES}, json.loads((out/'run.json').read_text())

def positive_finite(s): return bool((np.isfinite(s.astype(float)) & (s.astype(float) > 0)).all())

@pytest.mark.parametrize('how', [[str(SCRIPT)], ['-m', 'benchmarks.perf_report']])
def test_help(how):
    r = subprocess.run([sys.executable, *how, '--help'], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and '--quick' in r.stdout and '--out' in r.stdout and 'InputDistanceMiner' in r.stdout

def test_every_file_is_written(quick):
    out, t, run = quick
    for name in TABLES: assert len(t[name]) > 0, name
    for name in PLOTS:
        b = (out/f'{name}.png').read_bytes()
        assert b[:8] == b'\x89PNG\r\n\x1a\n' and len(b) > 10_000, name
    md = (out/'report.md').read_text()
    for h in ('## Reading', '## Store scaling', '## Views', '## Mining', '## Loss', '## Step', '## Memory', '## Growth'):
        assert h in md, h
    assert md.count('|---') >= len(TABLES)

def test_run_json(quick):
    _, _, run = quick
    assert run['mode'] == 'quick' and '--quick' in run['command'] and 'perf_report.py' in run['command']
    m = run['machine']
    assert m['cpu_model'] and m['cpu_model'] != 'unknown' and m['cores'] >= 1 and m['torch_threads'] >= 1
    assert len(run['load_before']) == 3 and len(run['load_after']) == 3
    assert run['wall_s'] > 0 and set(run['section_s']) >= {'reading', 'views', 'mining', 'loss', 'step', 'scaling'}
    assert run['versions']['torch'] and run['versions']['ecg_dml'] and run['versions']['wfdb']
    assert run['real_ecgs']['100'] > 0 and run['real_ecgs']['500'] > 0

def test_reading(quick):
    r = quick[1]['reading']
    assert set(r.fs) == {100, 500} and positive_finite(r.ecgs_per_s)
    for fs, g in r.groupby('fs'):
        kinds = {m.split(' ')[0] for m in g.method}
        assert {'read_record', 'wfdb.rdsamp', 'ECGStore.get_batch', 'ECGStore[i]', 'build_store'} <= kinds, kinds
        assert g[g.method.str.startswith('read_record')].vs_read_record.item() == 1

def test_store_scaling_memory_stays_flat(quick):
    s = quick[1]['store_scaling']
    assert len(s) == 4 and s['ECGs in store'].is_monotonic_increasing and s['ECGs in store'].iloc[-1] == 8 * s['ECGs in store'].iloc[0]
    for c in ('epoch 1 ECG/s', 'epoch 2 ECG/s', 'store[i] ECG/s'): assert positive_finite(s[c]), c
    # the data read grows 8x (~84 MB more int16 ECGs); a store that copied it into the process would show here
    assert s['RssAnon MB'].iloc[-1] - s['RssAnon MB'].iloc[0] < 40

def test_views(quick):
    v = quick[1]['views']
    assert set(v.pipeline) == {'simclr_views', 'threekg_views', 'clocs_segments', 'clocs_leads'}
    for p, g in v.groupby('pipeline'): assert sorted(g.B) == [64, 256, 1024], p
    assert positive_finite(v.ecgs_per_s) and positive_finite(v.seconds)
    assert set(v[v.pipeline == 'clocs_leads'].n_views) == {12} and set(v[v.pipeline == 'simclr_views'].n_views) == {2}
    assert set(v[v.pipeline == 'clocs_segments'].view_shape) == {'(12, 500)'}

def test_mining_agrees_with_loop_reference(quick):
    m = quick[1]['mining']
    assert set(m.distance) == {'euclidean', 'correlation', 'cosine', 'mae', 'dtw'}
    for d, g in m.groupby('distance'): assert sorted(g.B) == [64, 256, 1024], d
    done, skipped = m[m.status == 'measured'], m[m.status == 'skipped']
    assert set(m.status) <= {'measured', 'skipped'} and skipped.note.str.len().gt(0).all()
    for d in ('euclidean', 'correlation', 'cosine'): assert (m[m.distance == d].status == 'measured').all(), d
    assert ((done.distance == 'dtw') & (done.B == 64)).any()       # DTW is measured (and checked) at least at B = 64
    assert done.agrees.astype(bool).all() and (done.anchors_checked > 0).all() and (done.max_rel_error < 1e-3).all()
    assert (done.positive_agrees == 1).all() and (done.negative_agrees == 1).all()
    for c in ('miner_s', 'loop_s', 'speedup', 'miner_ecgs_per_s'): assert positive_finite(done[c]), c
    full = done[~done.loop_extrapolated.astype(bool)]
    assert (full.loop_pairs_timed == full.B * (full.B - 1) // 2).all()

def test_loss(quick):
    l = quick[1]['loss']
    assert l.loss.nunique() == 3 and all(sorted(g.B) == [64, 256, 1024] for _, g in l.groupby('loss'))
    assert positive_finite(l.ecgs_per_s) and np.isfinite(l.value).all() and l.grad_finite.all()
    two = l[~l.loss.str.startswith('MinedTriplet')]
    assert (two.rows == 2 * two.B).all()

def test_step_and_memory(quick):
    s, mem = quick[1]['step'], quick[1]['memory']
    for k, g in s.groupby(['method', 'encoder']): assert sorted(g.bs) == [32, 64, 128], k
    assert len(s) >= 6 and s.method.nunique() >= 2
    assert positive_finite(s.ecgs_per_s) and positive_finite(s.step_s) and (s.steps_timed >= 1).all()
    shares = s[[f'{p}_share' for p in ('data', 'views', 'forward', 'loss', 'backward', 'optimizer')]]
    assert np.allclose(shares.sum(1), 1) and (shares >= 0).all().all() and s.outside_encoder.between(0, 1).all()
    assert np.allclose(s.outside_encoder, s.data_share + s.views_share + s.loss_share)
    assert (s[s.method == 'simclr'].views_share > 0).all()
    assert len(mem) == len(s) and positive_finite(mem.peak_rss_mb)
    assert (mem.peak_rss_mb >= mem.rss_before_mb - 1).all()

def test_growth_table(quick):
    g = quick[1]['growth']
    assert {'views', 'mining', 'mining (loop)', 'loss', 'step'} <= set(g.table)
    assert np.isfinite(g[g.series == 'euclidean'].exponent).all()

# ---------------------------------------------------------------- the reference helpers themselves
def test_loop_reference_matches_and_catches_a_wrong_miner():
    pr = _module()
    from ecg_dml.core import BatchInfo
    from ecg_dml.metric.miners import InputDistanceMiner
    from ecg_dml.metric.distances import pairwise_distances
    x = torch.randn(12, 3, 40, generator=torch.Generator().manual_seed(0))
    pid = torch.arange(12) // 2                                         # pairs of rows share a patient
    for metric in ('euclidean', 'correlation', 'cosine', 'mae'):
        pair = pr.pair_reference(x, metric)
        D = pairwise_distances(x, metric=metric).double().numpy()
        ref = np.array([[0. if i == j else pair(i, j) for j in range(12)] for i in range(12)])
        np.testing.assert_allclose(D, ref, rtol=1e-5, atol=1e-5)
        trip = InputDistanceMiner(metric, generator=torch.Generator().manual_seed(1))(x, BatchInfo(patient_ids=pid, raw=x))
        ok = pr.check_agreement(pair, D, trip, pid.numpy(), range(12))
        assert ok['anchors_checked'] == 12 and ok['positive_agrees'] == 1 and ok['negative_agrees'] == 1
        sel = pr.loop_select(ref, pid.numpy())
        assert all(sel[a][0] == int(trip[1][k]) for k, a in enumerate(trip[0].tolist()))
        a, p, n = trip
        wrong = (a, n.clone(), p.clone())                                   # positive and negative swapped
        bad = pr.check_agreement(pair, D, wrong, pid.numpy(), range(12))
        assert bad['positive_agrees'] < 1 and bad['negative_agrees'] < 1
    secs, done = pr.loop_seconds(lambda i, j: None, 10, budget=5)
    assert done == 45 and secs >= 0

def test_timeit_and_growth_exponent():
    pr = _module()
    calls = []
    s, reps = pr.timeit(lambda: calls.append(1), budget=0.01, max_reps=3)
    assert reps == 3 and len(calls) == 4 and s >= 0                    # warm-up + 3 timed calls
    assert pr.growth_exponent([64, 256, 1024], [1, 16, 256]) == pytest.approx(2)
    assert np.isnan(pr.growth_exponent([64, 256], [1, np.nan]))

def test_md_table_and_no_sys_path_edits():
    "the benchmarks' one Markdown-table helper; and no benchmark script edits sys.path (they import as a package)"
    from benchmarks.benchtools import md_table
    df = pd.DataFrame({'a': [1, 2], 'b': [0.12345, np.nan], 'c': ['x|y', None]})
    assert md_table(df) == '| a | b | c |\n|---|---|---|\n| 1 | 0.123 | x\\|y |\n| 2 |  |  |'
    assert md_table(df.set_index('a'), floatfmt='.1f').splitlines()[2] == '| 1 | 0.1 | x\\|y |'   # a named index is a column
    assert md_table(df.iloc[:0]) == '_(no rows)_'
    for py in sorted((REPO/'benchmarks').glob('*.py')):
        assert 'sys.path.insert' not in py.read_text() and 'sys.path.append' not in py.read_text(), py.name
