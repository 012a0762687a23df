"""Performance report of ecg_dml: how fast each stage of self-supervised ECG metric learning runs, side by side, in one run.

Measures, on real PTB-XL ECGs (../shared/data/ptbxl when present, else the bundled 250-record sample):
  reading   ECGs/s of WFDB reading (ecg_dml.data.wfdb.read_record, wfdb.rdsamp) against the ECG store
            (ECGStore.get_batch in random batches of 256, store[i]) at 100 Hz and 500 Hz; plus the store's
            scaling with its size (synthetic stores, the functions of benchmarks/store_scaling.py)
  views     ECGs/s of each view pipeline (simclr, 3kg, clocs segments, clocs leads) at batch sizes 64/256/1024
  mining    InputDistanceMiner per input distance (euclidean, correlation, cosine, mae, dtw) against a plain Python
            loop over pairs (the DML paper's way), with the speed-up ratio and a check that both pick the same triplets
  loss      MinedTripletLoss (mining included), NTXent, CLOCSLoss forward + backward
  step      a real training step of pretrain(..., fit=False) split by ecg_dml.learner.StepTimer into data / views /
            forward / loss / backward / optimizer, for a few methods, encoders and batch sizes 32/64/128
  memory    peak resident memory (VmHWM, reset before each run) of each timed pretraining epoch, and the store's
            private memory (RssAnon) as it grows

Writes into --out: one CSV per table (reading, store_scaling, views, mining, loss, step, memory), report.md (all
tables), PNG plots (batch_scaling.png: cost against batch size, log-log; step_breakdown.png; reading.png;
store_scaling.png) and run.json (command, versions, CPU model, cores, torch threads, load average before/after,
wall time per section).

Speeds are reported, never asserted: on a shared machine they vary with the load (recorded in run.json).
Loop references for large batches are timed on the first pairs (up to --loop-budget seconds) and extrapolated to
all B(B-1)/2 pairs; the agreement check compares full rows of a few anchors exactly.

Usage: python benchmarks/perf_report.py --quick                 # CI: about 1-2 minutes on 2 cores
       python benchmarks/perf_report.py                         # full: 12-17 minutes measured on 2 shared cores
       python benchmarks/perf_report.py --sections mining loss  # only some sections
"""
from __future__ import annotations
import argparse, contextlib, ctypes, gc, io, json, math, os, platform, shlex, shutil, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
from ecg_dml.core import versions
if __package__:   # python -m benchmarks.perf_report, or imported as benchmarks.perf_report
    from . import store_scaling
    from .benchtools import cpu_model, md_table
else:             # python benchmarks/perf_report.py: Python puts this folder first on sys.path
    import store_scaling
    from benchtools import cpu_model, md_table

SECTIONS = ('reading', 'scaling', 'views', 'mining', 'loss', 'step')
DISTANCES = ('euclidean', 'correlation', 'cosine', 'mae', 'dtw')
DTW_KW = dict(band=0.1, fs=100, target_fs=50)            # as pretrain(method='dml-dtw'): 50 Hz, 10 % band
BATCHES = (64, 256, 1024)
STEP_BATCHES = (32, 64, 128)

MODES = {
    'quick': dict(n_store100=400, n_store500=60, n_read=40, n_read500=20, scaling_n=4000, scaling_items=2000,
                  budget=0.5, max_reps=5, loop_budget=0.3, check_anchors=4,
                  skip_mining={('dtw', 256): 'quick mode: ~10 s', ('dtw', 1024): 'about 1-2 minutes on 2 cores',
                               ('mae', 1024): 'quick mode: cdist(p=1) at B=1024 takes 10-25 s'},
                  step_methods=('dml', 'simclr'), step_encoders=('xresnet1d18',), step_skip=1, step_timed=1),
    'full': dict(n_store100=None, n_store500=None, n_read=300, n_read500=150, scaling_n=40000, scaling_items=20000,
                 budget=2.0, max_reps=20, loop_budget=2.0, check_anchors=16,
                 skip_mining={('dtw', 1024): 'about 1-2 minutes on 2 cores (plus its loop reference): left out'},
                 step_methods=('dml', 'simclr', 'clocs-cmsc'), step_encoders=('xresnet1d18', 'resnet1d18'),
                 step_skip=1, step_timed=3),
}

# ---------------------------------------------------------------- small tools
def log(*a): print(*a, flush=True)

def timeit(fn, budget:float, max_reps:int):
    "(best seconds, reps) of fn(): one warm-up call (kept alone if it exceeds `budget`), then 2..max_reps timed calls within `budget`"
    t0 = time.perf_counter(); fn(); first = time.perf_counter() - t0
    if first > budget: return first, 1
    ts, start = [], time.perf_counter()
    while len(ts) < max_reps and (time.perf_counter() - start < budget or len(ts) < 2):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts), len(ts)

def proc_status() -> dict:
    "Memory lines of /proc/self/status in MB (VmRSS, VmHWM, RssAnon, RssFile)"
    out = {}
    for line in Path('/proc/self/status').read_text().splitlines():
        k, _, v = line.partition(':')
        if k in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile'): out[k] = int(v.split()[0]) / 1024
    return out

def reset_peak() -> bool:
    """Return freed heap to the OS (glibc malloc_trim) and reset this process's peak RSS (VmHWM) so that the next
    reading covers only what follows (Linux >= 4.0); False where that is not possible"""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError): ctypes.CDLL('libc.so.6').malloc_trim(0)
    try: Path('/proc/self/clear_refs').write_text('5'); return True
    except OSError: return False

def quiet(fn, *a, **kw):
    "fn(*a, **kw) with its stdout swallowed (build_store prints a report line)"
    with contextlib.redirect_stdout(io.StringIO()): return fn(*a, **kw)

# ---------------------------------------------------------------- data
def data_root() -> tuple[Path, str]:
    from ecg_dml.core import sample_dir, shared_data_dir
    sh = shared_data_dir()
    if sh is not None and (sh/'ptbxl'/'ptbxl_database.csv').exists(): return sh/'ptbxl', 'shared PTB-XL (../shared/data/ptbxl)'
    return Path(sample_dir()), 'bundled PTB-XL sample (ecg_dml.core.sample_dir())'

def build_real_stores(root:Path, work:Path, cfg:dict) -> dict:
    "ECG stores of the real records at 100 Hz and 500 Hz, with their WFDB indexes and build speeds"
    from ecg_dml.data.ptbxl import ptbxl_index
    from ecg_dml.data.store import build_store
    out = {}
    for fs, n in ((100, cfg['n_store100']), (500, cfg['n_store500'])):
        idx = ptbxl_index(root, fs=fs, drop_missing=True)
        idx = idx.iloc[:n] if n else idx
        t = time.perf_counter()
        st = quiet(build_store, idx, work/f'store{fs}', fs=fs, n_workers=2, progress=False)
        out[fs] = dict(index=idx, store=st, build_s=time.perf_counter() - t)
    return out

def ecg_pool(store, n:int=max(BATCHES)) -> tuple[torch.Tensor, torch.Tensor]:
    "n real ECGs [n, 12, T] (the store's ECGs, repeated with time shifts of 0.25 s when it holds fewer) and patient ids"
    x = store.get_batch(np.arange(len(store)))
    pid = store.meta['patient_id'].to_numpy()
    reps = -(-n // len(x))
    xs = np.concatenate([np.roll(x, 25 * k, axis=-1) for k in range(reps)])[:n]
    return torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(np.tile(pid, reps)[:n]).long()

# ---------------------------------------------------------------- reading
def bench_reading(stores:dict, cfg:dict) -> pd.DataFrame:
    "ECGs/s of WFDB reading against the store, at 100 and 500 Hz"
    import wfdb
    from ecg_dml.data.wfdb import read_record
    rows = []
    for fs, s in stores.items():
        paths = [str(p) for p in s['index'].path]
        n = min(len(paths), cfg['n_read'] if fs == 100 else cfg['n_read500'])
        st, ns = s['store'], len(s['store'])
        def add(method, ecgs, secs, note=''):
            rows.append(dict(fs=fs, method=method, ecgs=ecgs, seconds=secs, ecgs_per_s=ecgs / secs, note=note))
        t = time.perf_counter()
        for p in paths[:n]: read_record(p)
        add('read_record (WFDB, checked, mV)', n, time.perf_counter() - t, 'files in the page cache')
        t = time.perf_counter()
        for p in paths[:n]: wfdb.rdsamp(p)
        add('wfdb.rdsamp', n, time.perf_counter() - t, 'files in the page cache')
        add('build_store (WFDB -> store, 2 workers)', ns, s['build_s'], 'one-off conversion')
        ep, k = [], 0
        t = time.perf_counter()
        while time.perf_counter() - t < cfg['budget'] or k < 2:
            ep.append(store_scaling.epoch_speed(st, ns, bs=256, seed=k)); k += 1
        add('ECGStore.get_batch (random batches of 256)', ns, ns / max(ep), f'best of {k} epochs over {ns} ECGs')
        items = 2000 if fs == 100 else 500
        add('ECGStore[i] (random single ECGs)', items, items / store_scaling.item_speed(st, ns, n=items), '')
    df = pd.DataFrame(rows)
    wf = df[df.method.str.startswith('read_record')].set_index('fs').ecgs_per_s
    df['vs_read_record'] = df.ecgs_per_s / df.fs.map(wf)
    return df

def bench_store_scaling(work:Path, cfg:dict) -> tuple[pd.DataFrame, dict]:
    "The store's reading speed and process memory for growing prefixes of one synthetic store (store_scaling.py)"
    from ecg_dml.data.store import ECGStore, build_store
    n, dest = cfg['scaling_n'], work/'synthetic_store'
    src = pd.DataFrame({'ecg_id': np.arange(n), 'patient_id': np.arange(n) // 3})
    t = time.perf_counter()
    quiet(build_store, src, dest, reader=store_scaling.SyntheticReader(), shard_size=4096, n_workers=2, progress=False)
    build_s = time.perf_counter() - t
    rows, base = [], store_scaling.rss()
    for m in (n // 8, n // 4, n // 2, n):
        gc.collect()
        st = ECGStore(dest)
        e1, e2 = store_scaling.epoch_speed(st, m, seed=1), store_scaling.epoch_speed(st, m, seed=2)
        item = store_scaling.item_speed(st, m, n=cfg['scaling_items'])
        anon, fileb = store_scaling.rss()
        rows.append({'ECGs in store': m, 'epoch 1 ECG/s': e1, 'epoch 2 ECG/s': e2, 'store[i] ECG/s': item,
                     'RssAnon MB': anon, 'RssAnon growth MB': anon - base[0], 'RssFile MB': fileb})
        del st
    shutil.rmtree(dest, ignore_errors=True)
    return pd.DataFrame(rows), dict(n=n, build_s=build_s, build_ecgs_per_s=n / build_s, rss_anon_before_mb=base[0])

# ---------------------------------------------------------------- views
def view_pipelines() -> dict:
    from ecg_dml.views import simclr_views, threekg_views, clocs_segments, clocs_leads
    return {'simclr_views': simclr_views(), 'threekg_views': threekg_views(), 'clocs_segments': clocs_segments(2),
            'clocs_leads': clocs_leads()}

def bench_views(pool:torch.Tensor, cfg:dict) -> pd.DataFrame:
    rows = []
    for name, v in view_pipelines().items():
        for B in BATCHES:
            x, g = pool[:B], torch.Generator().manual_seed(0)
            out = v(x, 100., g)
            s, reps = timeit(lambda: v(x, 100., g), cfg['budget'], cfg['max_reps'])
            rows.append(dict(pipeline=name, B=B, n_views=len(out), view_shape=str(tuple(out[0].shape[1:])),
                             seconds=s, ecgs_per_s=B / s, reps=reps))
    return pd.DataFrame(rows)

# ---------------------------------------------------------------- mining against a Python loop over pairs
def pair_reference(x:torch.Tensor, metric:str):
    "(i, j) -> distance between ECGs i and j computed alone, in float64 NumPy (DTW: dtaidistance's C code per pair)"
    if metric == 'dtw':
        from ecg_dml.metric.dtw import band_radius, downsample
        from dtaidistance import dtw_ndim
        xd = downsample(x, fs=DTW_KW['fs'], target_fs=DTW_KW['target_fs'])
        s = [np.ascontiguousarray(e.T, dtype=np.float64) for e in xd.numpy()]
        w = band_radius(DTW_KW['band'], xd.shape[-1]) + 1               # dtaidistance's window = radius + 1
        return lambda i, j: dtw_ndim.distance_fast(s[i], s[j], window=w)
    a = x.double().numpy()
    def corr(u, v):                                                    # 1 - mean over leads of Pearson r (flat lead: r=0)
        u, v = u - u.mean(-1, keepdims=True), v - v.mean(-1, keepdims=True)
        den = np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1)
        return 1 - np.mean(np.where(den > 0, (u * v).sum(-1) / np.where(den > 0, den, 1), 0.))
    def cos(u, v):
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        return 1 - (0. if nu == 0 or nv == 0 else float(u.ravel() @ v.ravel() / (nu * nv)))
    f = {'euclidean': lambda u, v: np.sqrt(((u - v) ** 2).sum()), 'mae': lambda u, v: np.abs(u - v).mean(),
         'cosine': cos, 'correlation': corr}[metric]
    return lambda i, j: f(a[i], a[j])

def loop_select(d:np.ndarray, pid:np.ndarray, neg_k:int=2):
    "The miner's rule by a loop over anchors: nearest other row as positive, the neg_k farthest allowed as negatives"
    out = {}
    for a in range(len(d)):
        order = np.argsort(d[a], kind='stable')
        p = next(int(j) for j in order if j != a)
        far = [int(j) for j in order[::-1] if j not in (a, p) and pid[j] != pid[a]][:neg_k]
        if far: out[a] = (p, far)
    return out

def loop_seconds(pair, B:int, budget:float, chunk:int=16) -> tuple[float, int]:
    """Seconds of a loop over all B(B-1)/2 pairs, and the pairs timed: measured when they fit in `budget`, else the median
    per-pair time of chunks of `chunk` pairs times the number of pairs (robust to a stall of the shared machine)"""
    pairs = [(i, j) for i in range(B) for j in range(i + 1, B)]
    chunks, t0 = [], time.perf_counter()
    for k in range(0, len(pairs), chunk):
        tc = time.perf_counter()
        for i, j in pairs[k:k + chunk]: pair(i, j)
        chunks.append((time.perf_counter() - tc) / len(pairs[k:k + chunk]))
        if time.perf_counter() - t0 > budget and len(chunks) >= 3 and k + chunk < len(pairs):
            return float(np.median(chunks)) * len(pairs), (k + chunk)
    return time.perf_counter() - t0, len(pairs)

def check_agreement(pair, D:np.ndarray, trip, pid:np.ndarray, anchors) -> dict:
    "Full reference rows of some anchors: distances equal (relative error), positive = nearest, negative among the 2 farthest"
    a, p, n = (t.numpy() for t in trip)
    got = {int(i): (int(j), int(k)) for i, j, k in zip(a, p, n)}
    err, pos_ok, neg_ok, checked = 0., 0, 0, 0
    for i in anchors:
        row = np.array([0. if j == i else pair(i, j) for j in range(len(D))])
        scale = max(row.max(), 1e-12); tol = 1e-4 * scale
        err = max(err, float(np.abs(D[i] - row).max() / scale))
        if i not in got: continue
        checked += 1
        pp, nn = got[i]
        pos_ok += row[pp] <= min(row[j] for j in range(len(row)) if j != i) + tol
        allowed = sorted((row[j] for j in range(len(row)) if j not in (i, pp) and pid[j] != pid[i]), reverse=True)
        neg_ok += pid[nn] != pid[i] and nn not in (i, pp) and row[nn] >= allowed[min(1, len(allowed) - 1)] - tol
    return dict(anchors_checked=checked, max_rel_error=err, positive_agrees=pos_ok / max(checked, 1),
                negative_agrees=neg_ok / max(checked, 1))

def bench_mining(pool:torch.Tensor, pid:torch.Tensor, cfg:dict) -> pd.DataFrame:
    from ecg_dml.core import BatchInfo
    from ecg_dml.metric.miners import InputDistanceMiner
    from ecg_dml.metric.distances import pairwise_distances
    rows = []
    for metric in DISTANCES:
        kw = DTW_KW if metric == 'dtw' else {}
        for B in BATCHES:
            row = dict(distance=metric, B=B)
            if (metric, B) in cfg['skip_mining']:
                rows.append({**row, 'status': 'skipped', 'note': cfg['skip_mining'][metric, B]}); continue
            x, p_ = pool[:B], pid[:B]
            info = BatchInfo(patient_ids=p_, raw=x)
            miner = InputDistanceMiner(metric, generator=torch.Generator().manual_seed(0), **kw)
            s, reps = timeit(lambda: miner(x, info), cfg['budget'], cfg['max_reps'])
            trip = miner(x, info)
            with torch.no_grad(): D = pairwise_distances(x, metric=metric, **kw).double().numpy()
            try: pair = pair_reference(x, metric)
            except ImportError:
                rows.append({**row, 'status': 'measured', 'miner_s': s, 'miner_ecgs_per_s': B / s, 'reps': reps,
                             'note': 'no loop reference: dtaidistance is not installed'}); continue
            t_pairs, done = loop_seconds(pair, B, cfg['loop_budget'])
            t0 = time.perf_counter(); loop_select(D, p_.numpy()); t_sel = time.perf_counter() - t0
            anchors = np.random.default_rng(B).choice(B, min(cfg['check_anchors'], B), replace=False)
            agree = check_agreement(pair, D, trip, p_.numpy(), anchors)
            total_pairs = B * (B - 1) // 2
            rows.append({**row, 'status': 'measured', 'miner_s': s, 'miner_ecgs_per_s': B / s, 'reps': reps,
                         'loop_s': t_pairs + t_sel, 'loop_ecgs_per_s': B / (t_pairs + t_sel),
                         'speedup': (t_pairs + t_sel) / s, 'loop_pairs_timed': done,
                         'loop_extrapolated': done < total_pairs, **agree,
                         'agrees': bool(agree['max_rel_error'] < 1e-3 and agree['positive_agrees'] == 1
                                        and agree['negative_agrees'] == 1),
                         'note': ('loop: dtaidistance C per pair' if metric == 'dtw' else 'loop: NumPy float64 per pair')
                                 + (f', extrapolated (median time per pair) from {done} of {total_pairs} pairs' if done < total_pairs else '')})
            log(f'  mining {metric:>11} B={B:<5} {s:8.3f} s  loop {t_pairs + t_sel:9.2f} s  agrees={rows[-1]["agrees"]}')
    return pd.DataFrame(rows)

# ---------------------------------------------------------------- losses
def bench_loss(pool:torch.Tensor, pid:torch.Tensor, cfg:dict, dim:int=128) -> pd.DataFrame:
    from ecg_dml.core import BatchInfo
    from ecg_dml.metric.losses import MinedTripletLoss
    from ecg_dml.metric.contrastive import NTXent, CLOCSLoss
    from ecg_dml.metric.miners import InputDistanceMiner
    rows = []
    for B in BATCHES:
        x, p = pool[:B], pid[:B]
        two = dict(sample_ids=torch.arange(B).repeat(2), view_ids=torch.arange(2).repeat_interleave(B), patient_ids=p.repeat(2))
        cases = {'MinedTripletLoss (euclidean input mining)': (MinedTripletLoss(InputDistanceMiner(generator=torch.Generator().manual_seed(0))), B,
                                                                BatchInfo(patient_ids=p, raw=x)),
                 'NTXent (2 views)': (NTXent(), 2 * B, BatchInfo(**two)),
                 'CLOCSLoss cmsc (2 segments)': (CLOCSLoss('cmsc'), 2 * B, BatchInfo(**two))}
        for name, (loss, R, info) in cases.items():
            emb = torch.randn(R, dim, generator=torch.Generator().manual_seed(B)).requires_grad_()
            def step(): emb.grad = None; loss(emb, info).backward()
            s, reps = timeit(step, cfg['budget'], cfg['max_reps'])
            with torch.no_grad(): val = loss(emb, info).item()
            rows.append(dict(loss=name, B=B, rows=R, seconds=s, ecgs_per_s=B / s, reps=reps, value=val,
                             grad_finite=bool(torch.isfinite(emb.grad).all())))
    return pd.DataFrame(rows)

# ---------------------------------------------------------------- full training step and memory
def bench_step(store, work:Path, cfg:dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    "StepTimer on pretrain(..., fit=False) learners; peak RSS of each (shortened) epoch"
    from ecg_dml.learner import StepTimer
    from ecg_dml.pretrain import pretrain
    rows, mem = [], []
    for method in cfg['step_methods']:
        for enc in cfg['step_encoders']:
            for bs in STEP_BATCHES:
                n_steps = max(1, min(cfg['step_skip'] + cfg['step_timed'], (len(store) - 16) // bs))
                skip = min(cfg['step_skip'], n_steps - 1)      # a small store (the bundled sample) times fewer steps
                split = np.full(len(store), 'unused', dtype='U8')
                split[:bs * n_steps] = 'train'; split[bs * n_steps:bs * n_steps + 16] = 'valid'
                peak_ok = reset_peak(); before = proc_status()
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    learn = pretrain(store, method=method, encoder=enc, bs=bs, epochs=1, out=work/'runs'/f'{method}_{enc}_{bs}',
                                     progress=False, probe=False, fit=False, split=split, seed=0)
                    learn.logger = lambda *a, **k: None
                    timer = StepTimer(skip=skip)
                    learn.add_cb(timer)
                    t = time.perf_counter(); learn.fit(1, 1e-3); epoch_s = time.perf_counter() - t
                after = proc_status()
                s = timer.summary()
                parts = {f'{k}_s': s.loc[k, 'seconds/step'] for k in ('data', 'views', 'forward', 'loss', 'backward', 'optimizer')}
                rows.append(dict(method=method, encoder=enc, bs=bs, ecgs_per_s=s.attrs['ecgs_per_s'],
                                 step_s=s.loc['step', 'seconds/step'], outside_encoder=s.attrs['outside_encoder'],
                                 steps_timed=s.attrs['steps'], **parts,
                                 **{f'{k}_share': s.loc[k, 'share'] for k in ('data', 'views', 'forward', 'loss', 'backward', 'optimizer')},
                                 epoch_s=epoch_s))
                mem.append(dict(method=method, encoder=enc, bs=bs, rss_before_mb=before['VmRSS'],
                                peak_rss_mb=after['VmHWM'] if peak_ok else np.nan,
                                peak_over_before_mb=after['VmHWM'] - before['VmRSS'] if peak_ok else np.nan,
                                rss_after_mb=after['VmRSS'], train_ecgs=bs * n_steps,
                                note='VmHWM reset before the run' if peak_ok else 'peak reset unavailable'))
                log(f'  step {method:>10} {enc:>11} bs={bs:<4} {rows[-1]["ecgs_per_s"]:7.1f} ECG/s, '
                    f'{rows[-1]["outside_encoder"]:.0%} outside the encoder, peak RSS {mem[-1]["peak_rss_mb"]:.0f} MB')
                del learn; shutil.rmtree(work/'runs', ignore_errors=True)
    return pd.DataFrame(rows), pd.DataFrame(mem)

# ---------------------------------------------------------------- plots
def growth_exponent(B, s) -> float:
    "Slope of log(seconds) against log(batch size) between the two largest batch sizes measured"
    B, s = np.asarray(B, float), np.asarray(s, float)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 2: return np.nan
    B, s = B[ok][-2:], s[ok][-2:]
    return float(np.log(s[1] / s[0]) / np.log(B[1] / B[0]))

def plot_batch_scaling(t:dict, out:Path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [('views', 'pipeline', 'seconds', 'views'), ('mining', 'distance', 'miner_s', 'mining (solid) vs Python loop (dashed)'),
              ('loss', 'loss', 'seconds', 'loss forward + backward'), ('step', None, 'step_s', 'training step')]
    panels = [p for p in panels if p[0] in t and len(t[p[0]])]
    fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, key, col, title) in zip(axs[0], panels):
        df = t[name]
        if name == 'mining': df = df[df.status == 'measured']
        bcol = 'bs' if name == 'step' else 'B'
        groups = df.groupby(['method', 'encoder']) if name == 'step' else df.groupby(key)
        for i, (g, d) in enumerate(groups):
            d = d.sort_values(bcol)
            label = '/'.join(g) if isinstance(g, tuple) else g
            ax.plot(d[bcol], d[col], 'o-', color=f'C{i}', label=label[:28])
            if name == 'mining' and 'loop_s' in d: ax.plot(d[bcol], d['loop_s'], 'x--', color=f'C{i}', alpha=.6)
        bs = np.array(sorted(df[bcol].unique()), float)
        if len(bs) > 1:
            y0 = df[col].min()
            ax.plot(bs, y0 * bs / bs[0], ':', color='grey', lw=1); ax.plot(bs, y0 * (bs / bs[0]) ** 2, ':', color='k', lw=1)
        ax.set(xscale='log', yscale='log', xlabel='batch size', ylabel='seconds per batch', title=title)
        ax.set_xticks(bs); ax.set_xticklabels([str(int(b)) for b in bs]); ax.minorticks_off()
        ax.legend(fontsize=6, title='dotted: ∝ B, ∝ B²', title_fontsize=6, framealpha=0.6)
    fig.tight_layout(); fig.savefig(out/'batch_scaling.png', dpi=110); plt.close(fig)

def plot_step_breakdown(step:pd.DataFrame, out:Path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    parts = ('data', 'views', 'forward', 'loss', 'backward', 'optimizer')
    lab = step.method + ' ' + step.encoder.str.replace('resnet1d18', 'rn18') + ' ' + step.bs.astype(str)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(step) + 2), 3.8))
    bottom = np.zeros(len(step))
    for i, p in enumerate(parts):
        v = step[f'{p}_share'].to_numpy(); ax.bar(range(len(step)), v, bottom=bottom, label=p, color=f'C{i}'); bottom += v
    ax.set_xticks(range(len(step))); ax.set_xticklabels(lab, rotation=60, ha='right', fontsize=7)
    ax.set(ylabel='share of a training step', title='Where a training step goes (StepTimer)', ylim=(0, 1))
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout(); fig.savefig(out/'step_breakdown.png', dpi=110); plt.close(fig)

def plot_reading(reading:pd.DataFrame, scaling:pd.DataFrame|None, out:Path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.6))
    lab = reading.method.str.split(' \\(').str[0] + ' @' + reading.fs.astype(str) + ' Hz'
    ax.barh(range(len(reading)), reading.ecgs_per_s, color=['C0' if f == 100 else 'C1' for f in reading.fs])
    ax.set_yticks(range(len(reading))); ax.set_yticklabels(lab, fontsize=8)
    ax.set(xscale='log', xlabel='ECGs per second (log)', title='Reading real PTB-XL ECGs: WFDB vs the store')
    fig.tight_layout(); fig.savefig(out/'reading.png', dpi=110); plt.close(fig)
    if scaling is None or not len(scaling): return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for c in ('epoch 1 ECG/s', 'epoch 2 ECG/s', 'store[i] ECG/s'): ax.plot(scaling['ECGs in store'], scaling[c], 'o-', label=c)
    ax.set(xscale='log', yscale='log', xlabel='ECGs in the (synthetic) store', ylabel='ECGs per second',
           title='Store reading speed and private memory vs size')
    ax2 = ax.twinx(); ax2.plot(scaling['ECGs in store'], scaling['RssAnon MB'], 'k--', label='RssAnon MB')
    ax2.set_ylabel('RssAnon, MB'); ax2.set_ylim(0, max(200, 1.5 * scaling['RssAnon MB'].max()))
    ax.legend(fontsize=7, loc='lower left'); ax2.legend(fontsize=7, loc='lower right')
    fig.tight_layout(); fig.savefig(out/'store_scaling.png', dpi=110); plt.close(fig)

# ---------------------------------------------------------------- report
def summary_growth(t:dict) -> pd.DataFrame:
    "Growth exponent of cost with batch size between the two largest sizes, per series (1: linear, 2: quadratic)"
    rows = []
    for name, key, bcol, col in (('views', ['pipeline'], 'B', 'seconds'), ('mining', ['distance'], 'B', 'miner_s'),
                                 ('mining', ['distance'], 'B', 'loop_s'), ('loss', ['loss'], 'B', 'seconds'),
                                 ('step', ['method', 'encoder'], 'bs', 'step_s')):
        df = t.get(name)
        if df is None or col not in df: continue
        if name == 'mining': df = df[df.status == 'measured']
        for g, d in df.groupby(key):
            d = d.sort_values(bcol)
            rows.append(dict(table=name + (' (loop)' if col == 'loop_s' else ''), series='/'.join(g),
                             batch_sizes='/'.join(map(str, d[bcol])), exponent=growth_exponent(d[bcol], d[col])))
    return pd.DataFrame(rows)

def write_report(t:dict, meta:dict, out:Path):
    cols = {'reading': ['fs', 'method', 'ecgs', 'ecgs_per_s', 'vs_read_record', 'note'],
            'views': ['pipeline', 'B', 'n_views', 'view_shape', 'seconds', 'ecgs_per_s'],
            'mining': ['distance', 'B', 'status', 'miner_s', 'loop_s', 'speedup', 'miner_ecgs_per_s', 'agrees',
                       'anchors_checked', 'max_rel_error', 'note'],
            'loss': ['loss', 'B', 'rows', 'seconds', 'ecgs_per_s', 'value'],
            'step': ['method', 'encoder', 'bs', 'ecgs_per_s', 'step_s', 'outside_encoder', 'data_share', 'views_share',
                     'forward_share', 'loss_share', 'backward_share', 'optimizer_share', 'steps_timed'],
            'memory': ['method', 'encoder', 'bs', 'rss_before_mb', 'peak_rss_mb', 'peak_over_before_mb', 'train_ecgs'],
            'store_scaling': None, 'growth': None}
    text = {'reading': 'ECGs per second reading real records one by one from WFDB files against the store (sharded int16 '
                       'memory map); `vs_read_record` is the speed relative to `read_record` at the same rate.',
            'store_scaling': 'A synthetic store read in random batches of 256 (epoch 1: first pass; epoch 2: pages mapped) '
                             'and by single ECGs, for growing prefixes; private memory (RssAnon) should stay flat.',
            'views': 'Each view pipeline applied to a batch of real ECGs (100 Hz, 12 x 1000), on the CPU.',
            'mining': 'InputDistanceMiner (all pairwise distances + nearest positive + one of the 2 farthest negatives) '
                      'against a Python loop over pairs; `agrees`: on full reference rows of the checked anchors, equal '
                      'distances (relative error < 1e-3), the same nearest positive and a negative among the 2 farthest.',
            'loss': 'Forward + backward on random 128-d embeddings; MinedTripletLoss includes its input-space mining.',
            'step': 'One training step of `pretrain(..., fit=False)` split by `StepTimer` (steps after the first '
                    'excluded); `outside_encoder` = data + views + loss share.',
            'memory': 'Peak resident memory of each timed (shortened) pretraining epoch: VmHWM reset before the run.',
            'growth': 'How cost grows with batch size: slope of log(seconds) against log(B) between the two largest '
                      'batch sizes (1 = linear, 2 = quadratic).'}
    lines = [f'# ecg_dml performance report ({meta["mode"]} mode)', '',
             f'Command: `{meta["command"]}`  ', f'Data: {meta["data"]}  ',
             f'Machine: {meta["machine"]["cpu_model"]}, {meta["machine"]["cores"]} cores, torch threads '
             f'{meta["machine"]["torch_threads"]}; load average before {meta["load_before"]} / after {meta["load_after"]}  ',
             f'Versions: ' + ', '.join(f'{k} {v}' for k, v in meta['versions'].items()) + '  ',
             f'Wall time: {meta["wall_s"]:.0f} s ({", ".join(f"{k} {v:.0f} s" for k, v in meta["section_s"].items())})', '',
             'Speeds are measured on a machine shared with other jobs: compare rows of one run, not runs.', '']
    for name, c in cols.items():
        df = t.get(name)
        if df is None or not len(df): continue
        lines += [f'## {name.replace("_", " ").capitalize()}', '', text.get(name, ''), '',
                  md_table(df[[k for k in c if k in df]] if c else df), '']
    (out/'report.md').write_text('\n'.join(lines))

def run_versions() -> dict:
    "`ecg_dml.core.versions()`, plus dtaidistance (the DTW loop reference of the mining section)"
    import importlib.metadata as im
    v = versions()
    try: v['dtaidistance'] = im.version('dtaidistance')
    except im.PackageNotFoundError: v['dtaidistance'] = None
    return v

def main(out='benchmarks/results/perf', quick:bool=False, sections=SECTIONS, threads:int|None=None,
         work:str|None=None, keep_work:bool=False, loop_budget:float|None=None) -> dict:
    "Run the chosen sections and write CSV tables, report.md, PNG plots and run.json into `out`; returns the tables"
    t_start, load_before = time.time(), os.getloadavg()
    cfg = dict(MODES['quick' if quick else 'full'])
    if loop_budget is not None: cfg['loop_budget'] = loop_budget
    if threads: torch.set_num_threads(threads)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    workdir = Path(work) if work else Path(tempfile.mkdtemp(prefix='ecg_dml_perf_'))
    workdir.mkdir(parents=True, exist_ok=True)
    root, data_desc = data_root()
    log(f'perf_report: {"quick" if quick else "full"} mode, data {root}, work {workdir}, out {out}')
    t, sec = {}, {}
    def run(name, fn):
        t0 = time.time(); log(f'[{name}]'); r = fn(); sec[name] = time.time() - t0; return r
    need_store = any(s in sections for s in ('reading', 'views', 'mining', 'loss', 'step'))
    stores = run('stores', lambda: build_real_stores(root, workdir, cfg)) if need_store else {}
    extra = {}
    if 'scaling' in sections: t['store_scaling'], extra['store_scaling'] = run('scaling', lambda: bench_store_scaling(workdir, cfg))
    if 'reading' in sections: t['reading'] = run('reading', lambda: bench_reading(stores, cfg))
    if need_store: pool, pid = ecg_pool(stores[100]['store'])
    if 'views' in sections: t['views'] = run('views', lambda: bench_views(pool, cfg))
    if 'mining' in sections: t['mining'] = run('mining', lambda: bench_mining(pool, pid, cfg))
    if 'loss' in sections: t['loss'] = run('loss', lambda: bench_loss(pool, pid, cfg))
    if 'step' in sections: t['step'], t['memory'] = run('step', lambda: bench_step(stores[100]['store'], workdir, cfg))
    t['growth'] = summary_growth(t)
    for name, df in t.items(): df.to_csv(out/f'{name}.csv', index=False)
    plot_batch_scaling(t, out)
    if 'step' in t: plot_step_breakdown(t['step'], out)
    if 'reading' in t: plot_reading(t['reading'], t.get('store_scaling'), out)
    meta = dict(mode='quick' if quick else 'full', command=shlex.join([sys.executable.split('/')[-1]] + sys.argv) if __name__ == '__main__' else f'perf_report.main(quick={quick}, sections={list(sections)})',
                argv=sys.argv, sections=list(sections), data=f'{data_desc}: {root}',
                real_ecgs={fs: len(s['store']) for fs, s in stores.items()}, pool_note='batches of 1024 repeat the real ECGs with 0.25 s time shifts when fewer are stored',
                versions=run_versions(),
                machine=dict(cpu_model=cpu_model(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                             platform=platform.platform()),
                load_before=[round(v, 2) for v in load_before], load_after=[round(v, 2) for v in os.getloadavg()],
                wall_s=time.time() - t_start, section_s=sec, config={k: (str(v) if isinstance(v, dict) else v) for k, v in cfg.items()},
                store_scaling=extra.get('store_scaling'), tables=sorted(f'{n}.csv' for n in t),
                plots=sorted(p.name for p in out.glob('*.png')), date=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
    (out/'run.json').write_text(json.dumps(meta, indent=1, default=str))
    write_report(t, meta, out)
    if not keep_work and not work: shutil.rmtree(workdir, ignore_errors=True)
    log(f'wrote {", ".join(meta["tables"] + meta["plots"])}, report.md, run.json to {out} in {meta["wall_s"]:.0f} s '
        f'(load average {meta["load_before"]} -> {meta["load_after"]})')
    return t

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='benchmarks/results/perf', help='folder for the CSV tables, report.md, plots and run.json (default: %(default)s)')
    p.add_argument('--quick', action='store_true', help='CI mode: smaller stores, fewer repeats, fewer step configurations (~1-2 min on 2 cores)')
    p.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS), help='sections to run (default: all)')
    p.add_argument('--threads', type=int, help='torch intra-op threads (default: torch\'s own setting)')
    p.add_argument('--loop-budget', type=float, help='seconds of Python-loop reference per (distance, batch) before extrapolating (quick 0.3, full 2)')
    p.add_argument('--work', help='scratch folder for the stores (default: a temporary folder, removed at the end)')
    p.add_argument('--keep-work', action='store_true', help='keep the temporary scratch folder')
    a = p.parse_args()
    main(a.out, a.quick, tuple(a.sections), a.threads, a.work, a.keep_work, a.loop_budget)
