"""The results study: self-supervised and supervised DML against contrastive baselines, a random-init encoder and
supervised training from scratch, on PTB-XL, with cross-validated pretraining.

For every outer test fold k of PTB-XL's strat_folds (validation fold k+1, training folds = the other eight), every
method pretrains its own encoder on the training folds only (no labels, except supervised DML) — the test fold's ECGs
are never read. Each encoder is then judged on fold k by the evaluation protocols of `ecg_dml.evaluate.protocols`
(linear probe, frozen encoder + MLP, finetuning; the random-init baseline gets linear, frozen + MLP and training from
scratch) at label fractions 1/5/10/50/100 % of the training labels, for three tasks: superdiagnostic (macro AUROC),
NORM vs abnormal (AUROC) and age (MAE). The folds' out-of-fold predictions are pooled (`merge_results`) into metrics
with bootstrap 95 % CIs, sex/age subgroup metrics, and paired bootstrap differences to the random-init baseline.

Resumable: every (method, fold) pretraining and every (method, fold, protocol) evaluation is stored under
<out>/work/ and skipped when present, so a killed run continues where it stopped (rerun the same command).

Outputs in --out: results.csv (long format, pooled over the test folds), results_per_fold.csv, subgroups.csv,
gaps.csv, vs_baseline.csv, timings.csv, tables/*.md, plots/*.png, run.json (command, versions, seeds, wall times,
machine), report.md (all tables in one page). <out>/work/ holds checkpoints and per-fold parts (not for committing).

Examples:
  python benchmarks/study.py --quick --out /tmp/study_quick        # CI: every table and plot in a few minutes
  python benchmarks/study.py --out benchmarks/results/full          # the full study (hours; prints its estimate)
  python benchmarks/study.py --out benchmarks/results/full --jobs 2 # the same, two (method, fold) units at a time
  python benchmarks/study.py --out benchmarks/results/full --jobs 2 --synthetic 4000
                                                                    # add the synthetic-corpus axis to that study
  python benchmarks/study.py --estimate                             # only print the full run's time estimate
"""
from __future__ import annotations
import argparse, contextlib, io, json, os, platform, shlex, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from study_report import write_report   # noqa: E402  (tables and plots)

# study method name -> pretrain() arguments; 'random-init' is the baseline (no pretraining)
STUDY_METHODS = {
    'dml-euclidean': dict(method='dml-paper', distance='euclidean'),   # the DML paper's rule
    'dml-correlation': dict(method='dml-paper', distance='correlation'),
    'dml-dtw': dict(method='dml-dtw'),
    'dml-knn-euclidean': dict(method='dml-knn', distance='euclidean'),
    'dml-knn-correlation': dict(method='dml-knn', distance='correlation'),
    'supdml': dict(method='supdml', labels='superdiagnostic'),
    'simclr': dict(method='simclr'),
    '3kg': dict(method='3kg'),
    'clocs-cmsc': dict(method='clocs-cmsc'),
    'clocs-cmlc': dict(method='clocs-cmlc'),
    'clocs-cmsmlc': dict(method='clocs-cmsmlc'),
    'pclr': dict(method='pclr'),
}
BASELINE = 'random-init'
PRETRAINED_PROTOCOLS, BASELINE_PROTOCOLS = ('linear', 'frozen_mlp', 'finetune'), ('linear', 'frozen_mlp', 'scratch')
TASKS, FRACTIONS = ('superdiagnostic', 'norm_vs_abnormal', 'age'), (0.01, 0.05, 0.1, 0.5, 1.0)
SYNTHETIC_METHODS = ('dml-euclidean', 'dml-correlation', 'simclr')   # methods rerun on real + synthetic ECGs

# Measured in the committed full run (benchmarks/results/full/timings.csv: quiet 2-core CPU, two worker processes of
# one torch thread each, xresnet1d18, PTB-XL at 100 Hz, 10 s): seconds per pretraining epoch per 1,000 training ECGs
# (CMSMLC not run there: scaled from CMLC by their ratio in an earlier measurement), and seconds per evaluation of
# one (method, fold, protocol) for the three tasks and five fractions with 1,000 bootstrap resamples, per training
# epoch of the protocol (linear: fixed; frozen_mlp: at 30 MLP epochs). A shared machine takes about twice as long.
PRETRAIN_S_PER_EPOCH_1K = {'dml-euclidean': 5.1, 'dml-correlation': 4.3, 'dml-dtw': 7.0, 'dml-knn-euclidean': 4.3,
                           'dml-knn-correlation': 4.8, 'supdml': 4.3, 'simclr': 9.5, '3kg': 8.1, 'clocs-cmsc': 5.4,
                           'clocs-cmlc': 71.1, 'clocs-cmsmlc': 82.0, 'pclr': 4.7}
EVAL_S = {'linear': 4.8, 'frozen_mlp': 4.5, 'finetune_per_epoch': 15.0, 'scratch_per_epoch': 12.9}
EVAL_S_RECORDS = 987   # EVAL_S was measured on this many records (the shared subset at the time of the full run)
ENCODER_COST = {'xresnet1d18': 1.0, 'resnet1d18': 6.3}   # relative to xresnet1d18 (measured per pretraining epoch)

# quick: one test fold; fold 10 of the bundled sample (29 ECGs) has at least 10 of each sex, so subgroup gaps exist
QUICK = dict(epochs=1, bs=32, seconds=2.5, test_folds=[10], eval_epochs=1, mlp_epochs=5, n_boot=50, patience=1,
             probe_cs=[1e-3, 0.1], no_finetune=['clocs-cmlc', 'clocs-cmsmlc'])
# Full mode: chosen so that the whole study takes about an hour on the quiet 2-core CPU with --jobs 2 (measured:
# 54 min; about 2 h in one process, twice that when the machine is shared):
# five outer test folds (each pretraining still sees eight folds), 5 pretraining epochs, 3 finetuning epochs, and
# every method but CLOCS CMSMLC (whose pretraining alone costs 12 times a DML run; add it with --methods).
FULL = dict(epochs=5, bs=64, seconds=10.0, test_folds=[2, 4, 6, 8, 10], eval_epochs=3, mlp_epochs=30, n_boot=1000,
            patience=2, probe_cs=None, no_finetune=['clocs-cmlc', 'clocs-cmsmlc'],
            methods=[m for m in STUDY_METHODS if m != 'clocs-cmsmlc'])
QUICK['methods'] = list(STUDY_METHODS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='study_results', help='output folder (created; an existing run resumes) [%(default)s]')
    p.add_argument('--quick', action='store_true', help=f'CI mode: tiny settings {QUICK}, the bundled 250-record '
                   'sample unless --data is given; every table and plot is produced')
    p.add_argument('--data', default=None, help='PTB-XL root or store folder [full: ../shared/data/ptbxl; quick: bundled sample]')
    p.add_argument('--methods', default=None,
                   help=f'comma-separated study methods (the random-init baseline always runs) [full: all but '
                        f'clocs-cmsmlc; quick: all]; known: {", ".join(STUDY_METHODS)}')
    p.add_argument('--test-folds', default=None, help=f'comma-separated outer test folds, 1-10 for all ten '
                   f'[full: {",".join(map(str, FULL["test_folds"]))}; quick: {",".join(map(str, QUICK["test_folds"]))}]')
    p.add_argument('--tasks', default=','.join(TASKS), help='comma-separated tasks [%(default)s]')
    p.add_argument('--fractions', default=','.join(f'{f:g}' for f in FRACTIONS), help='label fractions [%(default)s]')
    p.add_argument('--protocols', default='linear,frozen_mlp,finetune,scratch',
                   help='protocols; finetune applies to pretrained encoders, scratch to the baseline [%(default)s]')
    p.add_argument('--no-finetune', default=None,
                   help='comma-separated methods evaluated without finetuning ("none": finetune all) [default: the '
                        'one-lead CLOCS encoders clocs-cmlc,clocs-cmsmlc, whose finetuning costs 12 times as much]')
    p.add_argument('--probe-cs', default=None, help='comma-separated inverse L2 strengths of the logistic probe '
                   '[full: the library default; quick: 0.001,0.1]')
    p.add_argument('--encoder', default='xresnet1d18', help='encoder architecture for every method [%(default)s]')
    p.add_argument('--epochs', type=int, default=None, help=f'pretraining epochs [full {FULL["epochs"]}, quick {QUICK["epochs"]}]')
    p.add_argument('--bs', type=int, default=None, help=f'pretraining batch size [full {FULL["bs"]}, quick {QUICK["bs"]}]')
    p.add_argument('--lr', type=float, default=1e-3, help='pretraining learning rate [%(default)s]')
    p.add_argument('--seconds', type=float, default=None, help=f'ECG length in s at 100 Hz [full {FULL["seconds"]:g}, quick {QUICK["seconds"]:g}]')
    p.add_argument('--eval-epochs', type=int, default=None, help=f'epochs of finetune/scratch [full {FULL["eval_epochs"]}, quick {QUICK["eval_epochs"]}]')
    p.add_argument('--mlp-epochs', type=int, default=None, help=f'epochs of the frozen-feature MLP [full {FULL["mlp_epochs"]}, quick {QUICK["mlp_epochs"]}]')
    p.add_argument('--n-boot', type=int, default=None, help=f'bootstrap resamples per CI [full {FULL["n_boot"]}, quick {QUICK["n_boot"]}]')
    p.add_argument('--seed', type=int, default=0, help='seed of pretraining, label subsets, training and bootstrap [%(default)s]')
    p.add_argument('--synthetic', type=int, default=0, metavar='N',
                   help='also pretrain the methods in --synthetic-methods on the training folds plus N unlabeled '
                        'synthetic ECGs (needs ecg_dml.data.synthetic and deepfake-ecg) [%(default)s: off]')
    p.add_argument('--synthetic-methods', default=','.join(SYNTHETIC_METHODS), help='[%(default)s]')
    p.add_argument('--threads', type=int, default=1, help='torch threads (1 is fastest on a shared 2-core machine) [%(default)s]')
    p.add_argument('--jobs', type=int, default=1, help='worker processes running (method, fold) units side by side, '
                   'each with --threads torch threads (2 on a quiet 2-core machine: about half the wall time) [%(default)s]')
    p.add_argument('--estimate', action='store_true', help='print the time estimate of these settings and exit')
    a = p.parse_args(argv)
    mode = QUICK if a.quick else FULL
    for k, v in mode.items():
        if getattr(a, k, None) is None: setattr(a, k, v)
    if not isinstance(a.test_folds, list):
        t = str(a.test_folds); a.test_folds = (list(range(int(t.split('-')[0]), int(t.split('-')[1]) + 1)) if '-' in t
                                              else [int(v) for v in t.split(',')])
    if not isinstance(a.methods, list): a.methods = [m for m in a.methods.split(',') if m]
    bad = [m for m in a.methods if m not in STUDY_METHODS]
    if bad: p.error(f'unknown method(s) {bad}; known: {", ".join(STUDY_METHODS)}')
    a.tasks, a.protocols = a.tasks.split(','), a.protocols.split(',')
    a.fractions = [float(v) for v in a.fractions.split(',')]
    if not isinstance(a.no_finetune, list): a.no_finetune = [m for m in a.no_finetune.split(',') if m and m != 'none']
    if a.probe_cs is not None and not isinstance(a.probe_cs, list): a.probe_cs = [float(v) for v in a.probe_cs.split(',')]
    a.synthetic_methods = [m for m in a.synthetic_methods.split(',') if m]
    if a.synthetic:
        try: import ecg_dml.data.synthetic  # noqa: F401
        except ImportError as e:
            p.error(f'--synthetic needs the module ecg_dml.data.synthetic, which this installation lacks ({e})')
        bad = [m for m in a.synthetic_methods if m not in STUDY_METHODS or m in ('supdml', 'pclr')]
        if bad: p.error(f'--synthetic-methods: {bad} cannot pretrain on unlabeled synthetic ECGs without patients')
    return a


# ---------------------------------------------------------------- settings, estimate, bookkeeping
def unit_settings(a) -> dict:
    """What a stored pretraining/evaluation depends on: a rerun with other values must not reuse it. Not --synthetic:
    units on real plus N synthetic ECGs are named `<method>+synN`, so a later run can add them to a finished study"""
    return dict(data=str(a.data), encoder=a.encoder, seconds=a.seconds, epochs=a.epochs, bs=a.bs, lr=a.lr, seed=a.seed,
                eval_epochs=a.eval_epochs, mlp_epochs=a.mlp_epochs, n_boot=a.n_boot, tasks=a.tasks,
                fractions=a.fractions, patience=a.patience, probe_cs=a.probe_cs)

def plan(a):
    "(pretraining units, evaluation units): [(method, fold)], [(method, fold, protocol)]"
    methods = list(a.methods) + [f'{m}+syn{a.synthetic}' for m in a.synthetic_methods if a.synthetic]
    pre = [(m, k) for m in methods for k in a.test_folds]
    ev = [(m, k, p) for m in methods for k in a.test_folds for p in PRETRAINED_PROTOCOLS
          if p in a.protocols and not (p == 'finetune' and base_method(m) in a.no_finetune)]
    ev += [(BASELINE, k, p) for k in a.test_folds for p in BASELINE_PROTOCOLS if p in a.protocols]
    return pre, ev

def base_method(m:str) -> str: return m.split('+syn')[0]

def estimate(a, n_records:int, pre, ev) -> dict:
    "Predicted seconds per stage from the measured per-unit costs, scaled to the data, length, epochs and encoder"
    n_train = n_records * 0.8   # eight of ten folds train
    scale = (a.seconds / 10) * ENCODER_COST.get(a.encoder, 1.0)
    syn = a.synthetic
    pt = sum(PRETRAIN_S_PER_EPOCH_1K[base_method(m)] * (n_train + (syn if '+syn' in m else 0)) / 1000 * a.epochs * scale
             for m, _ in pre)
    data_scale = n_records / EVAL_S_RECORDS
    def ev_cost(m, p):
        if p in ('linear', 'frozen_mlp'):
            c = EVAL_S[p] * data_scale * (a.mlp_epochs / 30 if p == 'frozen_mlp' else 1)
            return c * (7.5 if 'cmlc' in m or 'cmsmlc' in m else 1)   # embedding twelve leads one by one (measured)
        c = EVAL_S[f'{p}_per_epoch'] * a.eval_epochs * data_scale * scale * len(a.fractions) / 5 * len(a.tasks) / 3
        return c * (12 if 'cmlc' in m or 'cmsmlc' in m else 1)
    evs = sum(ev_cost(m, p) for m, _, p in ev)
    return dict(pretrain_s=pt, evaluate_s=evs, total_s=pt + evs)

def fmt_s(s: float) -> str: return f'{s / 3600:.1f} h' if s >= 5400 else f'{s / 60:.1f} min' if s >= 90 else f'{s:.0f} s'

def machine() -> dict:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    mem = next((int(l.split()[1]) // 1024 for l in Path('/proc/meminfo').read_text().splitlines()
                if l.startswith('MemTotal')), None) if Path('/proc/meminfo').exists() else None
    return dict(platform=platform.platform(), cpu=cpu, cpu_count=os.cpu_count(), memory_mb=mem,
                load_average=os.getloadavg() if hasattr(os, 'getloadavg') else None, hostname=platform.node())

def versions() -> dict:
    import importlib.metadata as md
    out = {'python': sys.version.split()[0]}
    for pkg in ('ecg_dml', 'torch', 'fastai', 'fastcore', 'numpy', 'pandas', 'scikit-learn', 'scipy',
                'pytorch-metric-learning', 'matplotlib'):
        try: out[pkg] = md.version(pkg)
        except md.PackageNotFoundError: out[pkg] = None
    try: out['git_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=HERE, capture_output=True, text=True,
                                            timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError): out['git_commit'] = None
    return out

def read_json(p:Path): return json.loads(p.read_text()) if p.exists() else None
def write_json(p:Path, obj):
    p.parent.mkdir(parents=True, exist_ok=True); tmp = p.with_suffix('.tmp')
    tmp.write_text(json.dumps(obj, indent=1, default=str)); tmp.replace(p)


# ---------------------------------------------------------------- data
def load_study_data(a, work:Path):
    from ecg_dml.core import sample_dir, shared_data_dir
    from ecg_dml.data.sources import open_ecgs
    if a.data is None:
        sd = shared_data_dir()
        a.data = str(sample_dir() if a.quick or sd is None else sd/'ptbxl')
    return open_ecgs(a.data, fs=100, seconds=a.seconds, dest=work/'store', progress=False)

def synthetic_signals(a, work:Path):
    """The synthetic corpus (built once, resumable, with --jobs generating processes) as an array [N, 12, T] in mV.
    The seconds its generation took are kept in <store>/generation.json, so a resumed run still reports the cost"""
    from ecg_dml.data import synthetic as syn
    dest = work/f'synthetic_{a.synthetic}'; gen = dest/'generation.json'
    t0 = time.perf_counter()
    try: st = syn.synthetic_store(a.synthetic, dest, fs=100, seconds=a.seconds, seed=a.seed, progress=False,
                                  n_workers=a.jobs if a.jobs > 1 else 0, threads=a.threads)
    except syn.SyntheticError as e: sys.exit(f'--synthetic: {e}')
    if not gen.exists():
        write_json(gen, dict(n=a.synthetic, seconds=round(time.perf_counter() - t0, 2), processes=max(1, a.jobs),
                             threads=a.threads, generator=syn.generator_version()))
    return st.get_batch(np.arange(len(st)))


# ---------------------------------------------------------------- stages
def pretrain_unit(a, method:str, fold:int, signals, meta, folder:Path, syn_x=None) -> dict:
    "Pretrain `method` without test fold `fold`'s ECGs into `folder` (resuming a killed run); returns its timing"
    from ecg_dml.evaluate.protocols import cv_splits
    from ecg_dml.pretrain import pretrain, pretrain_split
    done = read_json(folder/'done.json')
    if done and (folder/'encoder.pth').exists(): return {**done, 'status': 'skipped (done earlier)'}
    (_, _, va, _), = cv_splits(meta.strat_fold.to_numpy(), 'strat_folds', test_folds=(fold,))
    split = pretrain_split(meta, valid_folds=(int(meta.strat_fold.iloc[va[0]]),), test_folds=(fold,))
    kw = dict(STUDY_METHODS[base_method(method)])
    data = signals
    if syn_x is not None:   # real training/validation ECGs + the synthetic corpus (all training), test fold unread
        use = np.flatnonzero(split != 'test')
        data = np.concatenate([signals.get_batch(use), syn_x]).astype(np.float32)
        split = np.concatenate([split[use], np.full(len(syn_x), 'train')])
    if kw.get('labels') == 'superdiagnostic':   # supervised DML: the label set of each ECG as its class
        kw['labels'] = meta.superdiagnostic.astype(str).to_numpy()
    t0 = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pretrain(data, encoder=a.encoder, epochs=a.epochs, bs=a.bs, lr=a.lr, fs=100, seconds=a.seconds, split=split,
                 out=folder, seed=a.seed, progress=False, resume=(folder/'checkpoint.pth').exists(), **kw)
    (folder/'stdout.log').write_text(log.getvalue())
    t = dict(stage='pretrain', method=method, fold=fold, seconds=round(time.perf_counter() - t0, 2),
             n_train=int((split == 'train').sum()), epochs=a.epochs, status='run')
    write_json(folder/'done.json', t)
    return t

def evaluate_unit(a, method:str, fold:int, protocol:str, signals, meta, enc_path, folder:Path) -> dict:
    "Evaluate one fold's encoder (or the random-init baseline) with one protocol; the part is saved to `folder`"
    from ecg_dml.evaluate.protocols import evaluate
    done = read_json(folder/'done.json')
    if done: return {**done, 'status': 'skipped (done earlier)'}
    t0 = time.perf_counter()
    spec = a.encoder if method == BASELINE else str(enc_path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        part = evaluate(spec, (signals, meta), tasks=a.tasks, protocols=(protocol,), fractions=a.fractions,
                        seeds=(a.seed,), test_folds=(fold,), random_init=method == BASELINE, name=method,
                        epochs=a.eval_epochs, mlp_epochs=a.mlp_epochs, patience=a.patience, n_boot=a.n_boot,
                        retrieval=False, subgroup_fraction=None, verbose=False,
                        probe_kw=None if a.probe_cs is None else dict(Cs=tuple(a.probe_cs), n_folds=2))
    part.save(folder, plots=False, features=False)
    t = dict(stage='evaluate', method=method, fold=fold, protocol=protocol, seconds=round(time.perf_counter() - t0, 2),
             status='run')
    write_json(folder/'done.json', t)
    return t

def chains(pre, ev) -> list[tuple[tuple|None, list]]:
    "Independent work items: each (method, fold) pretraining with the evaluations of its encoder; each baseline evaluation"
    out = [((m, k), [(m2, k2, p) for m2, k2, p in ev if (m2, k2) == (m, k)]) for m, k in pre]
    return out + [(None, [u]) for u in ev if u[0] == BASELINE]

def chain_cost(a, n_records:int, chain) -> float:
    "Predicted seconds of a chain (for scheduling the longest first)"
    unit, evs = chain
    return estimate(a, n_records, [unit] if unit else [], evs)['total_s']

_W = {}   # per worker process: the study's data, loaded once
def _worker_init(a, work):
    import torch
    torch.set_num_threads(a.threads)
    _W['data'] = load_study_data(a, work)
    _W['syn'] = synthetic_signals(a, work) if a.synthetic else None

def run_chain(a, chain, work:Path, data=None, syn_x=None) -> list[dict]:
    "Run one chain (in this process or a worker) and return its unit timings"
    signals, meta = data if data is not None else _W['data']
    syn_x = syn_x if data is not None else _W['syn']
    unit, evs = chain
    ts = []
    if unit:
        m, k = unit
        ts.append(pretrain_unit(a, m, k, signals, meta, work/'pretrain'/m/f'fold{k}', syn_x if '+syn' in m else None))
    for m, k, p in evs:
        ts.append(evaluate_unit(a, m, k, p, signals, meta, work/'pretrain'/m/f'fold{k}'/'encoder.pth',
                                work/'eval'/m/f'fold{k}'/p))
    return ts

def _unit_line(t) -> str:
    what = f"{t['method']} fold {t['fold']}" + (f" {t['protocol']}" if t['stage'] == 'evaluate' else '')
    return f"{t['stage']} {what}: {t['seconds']:.1f} s {t['status']}"

def run_units(a, pre, ev, signals, meta, work:Path, syn_x) -> list[dict]:
    """Every pretraining and evaluation unit, in `a.jobs` processes. A chain is a (method, fold) pretraining followed
    by the evaluations of its encoder; chains are independent, so with --jobs N they run N at a time (longest
    predicted first), each process with --threads torch threads. Units already done are skipped (resume)."""
    todo = chains(pre, ev)
    n_units, done, timings = len(pre) + len(ev), 0, []
    def report(ts):
        nonlocal done
        for t in ts:
            done += 1; timings.append(t)
            print(f'[{done}/{n_units}] {_unit_line(t)}', flush=True)
    if a.jobs <= 1:
        for c in todo: report(run_chain(a, c, work, (signals, meta), syn_x))
        return timings
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    todo = sorted(todo, key=lambda c: -chain_cost(a, len(meta), c))
    with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context('spawn'), initializer=_worker_init,
                             initargs=(a, work)) as ex:
        futs = {ex.submit(run_chain, a, c, work): c for c in todo}
        for f in as_completed(futs):
            try: report(f.result())
            except Exception as e:   # stop at once (finished units are kept; a rerun resumes), naming the unit
                ex.shutdown(wait=False, cancel_futures=True)
                unit, evs = futs[f]
                what = f'pretraining {unit[0]} fold {unit[1]} or its evaluations' if unit else 'evaluation {} fold {} {}'.format(*evs[0])
                raise RuntimeError(f'{what} failed in a worker process: {type(e).__name__}: {e}') from e
    order = {u: i for i, u in enumerate([('pretrain', m, k, None) for m, k in pre] + [('evaluate', *u) for u in ev])}
    return sorted(timings, key=lambda t: order[(t['stage'], t['method'], t['fold'], t.get('protocol'))])


def merge_stage(a, ev_units, work:Path):
    "Pool each (method, protocol) over its test folds with `merge_results`: results, subgroups, predictions"
    from ecg_dml.evaluate.protocols import load_results, merge_results
    res, subs, preds = [], [], []
    groups = {}
    for m, k, p in ev_units: groups.setdefault((m, p), []).append(k)
    for (m, p), folds in groups.items():
        parts = [load_results(work/'eval'/m/f'fold{k}'/p) for k in sorted(folds)]
        mr = merge_results(parts, retrieval=False, subgroup_fraction=max(a.fractions))
        res.append(mr.results); preds.append(mr.predictions)
        if len(mr.subgroups): subs.append(mr.subgroups)
    return (pd.concat(res, ignore_index=True), pd.concat(subs, ignore_index=True) if subs else pd.DataFrame(),
            pd.concat(preds, ignore_index=True))


def main(argv=None):
    a = parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    t_start = time.time()
    out = Path(a.out); work = out/'work'
    out.mkdir(parents=True, exist_ok=True); work.mkdir(exist_ok=True)
    (out/'.gitignore').write_text('work/\n')   # checkpoints and per-fold parts stay out of version control
    stages = {}
    t0 = time.perf_counter()
    signals, meta = load_study_data(a, work)
    stages['data'] = round(time.perf_counter() - t0, 2)
    pre, ev = plan(a)
    est = estimate(a, len(meta), pre, ev)
    print(f'study: {len(meta)} ECGs ({a.data}), {a.seconds:g} s at 100 Hz, {len(a.methods)} methods + {BASELINE}, '
          f'test folds {a.test_folds}, {len(pre)} pretrainings, {len(ev)} evaluations')
    print(f'estimated wall time on the reference 2-core CPU: pretraining {fmt_s(est["pretrain_s"])}, evaluation '
          f'{fmt_s(est["evaluate_s"])}, total {fmt_s(est["total_s"])} in one process'
          + (f', about {fmt_s(est["total_s"] / a.jobs)} with --jobs {a.jobs}' if a.jobs > 1 else '')
          + f' (work already in {work} is skipped)', flush=True)
    if a.estimate: return est
    settings = unit_settings(a); old = read_json(work/'settings.json')
    if old is not None and old != json.loads(json.dumps(settings)):
        diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(settings)).items() if old.get(k) != v}
        sys.exit(f'{work} holds a run with other settings {diff}: use another --out (or delete it)')
    write_json(work/'settings.json', settings)
    syn_x = synthetic_signals(a, work) if a.synthetic else None   # built here once; workers read the store
    timings = run_units(a, pre, ev, signals, meta, work, syn_x)
    t0 = time.perf_counter()
    results, subgroups, preds = merge_stage(a, ev, work)
    stages['merge'] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    files = write_report(out, results, subgroups, preds, pd.DataFrame(timings), methods=list(dict.fromkeys(m for m, *_ in ev)),
                         fractions=a.fractions, tasks=a.tasks, n_boot=a.n_boot, seed=a.seed, baseline=BASELINE)
    stages['report'] = round(time.perf_counter() - t0, 2)
    T = pd.DataFrame(timings)
    stages['pretrain_run'] = round(T.query("stage == 'pretrain' and status == 'run'").seconds.sum(), 2) if len(T) else 0
    stages['evaluate_run'] = round(T.query("stage == 'evaluate' and status == 'run'").seconds.sum(), 2) if len(T) else 0
    run = dict(command=' '.join(shlex.quote(v) for v in ['python', *sys.argv]) if argv is None else argv,
               mode='quick' if a.quick else 'full', settings=settings, methods=a.methods, test_folds=a.test_folds,
               protocols=a.protocols, no_finetune=a.no_finetune, synthetic=a.synthetic, jobs=a.jobs, seeds={'seed': a.seed, 'bootstrap': a.seed,
               'label_subsets': f'[{a.seed}, test fold]'}, threads=a.threads, n_records=len(meta),
               estimate_s={k: round(v) for k, v in est.items()}, stage_seconds=stages,
               units_run=int((T.status == 'run').sum()), units_skipped=int((T.status != 'run').sum()),
               unit_seconds=T.to_dict('records'), wall_seconds=round(time.time() - t_start, 1),
               started=time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t_start)), versions=versions(),
               synthetic_generation=read_json(work/f'synthetic_{a.synthetic}'/'generation.json') if a.synthetic else None,
               machine=machine(), files=sorted(str(f.relative_to(out)) for f in files))
    # a study may be completed by several invocations (a killed run resumed, synthetic units added later): each is
    # recorded, so the total wall time is known
    inv = read_json(work/'invocations.json') or []
    inv.append(dict(command=run['command'], started=run['started'], wall_seconds=run['wall_seconds'],
                    units_run=run['units_run'], jobs=a.jobs, threads=a.threads, load_average=run['machine']['load_average']))
    write_json(work/'invocations.json', inv)
    run['invocations'] = inv
    run['total_wall_seconds'] = round(sum(i['wall_seconds'] for i in inv), 1)
    write_json(out/'run.json', run)
    print(f'done in {fmt_s(run["wall_seconds"])}: {run["units_run"]} units run, {run["units_skipped"]} skipped; '
          f'{len(files)} files in {out.resolve()}')
    return run


if __name__ == '__main__': main()
