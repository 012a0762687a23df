"""The results study (v2): does self-supervised DML learn? Every method against a random-init encoder, supervised
training from scratch and handcrafted ECG features, on PTB-XL, at budgets where each method shows what it learns.

Split (the same for every method, and for the shipped pretrained encoder): PTB-XL's strat_folds 9 and 10 are the test
set, never read before evaluation; fold 8 validates (the pretraining's kNN probe and purity, the early stopping of
finetuning and scratch training); folds 1-7 train. Every method pretrains the same encoder for the same number of
optimizer steps (not epochs: a corpus 11 times larger would otherwise get 11 times the steps), with the same batch
size, learning rate and seed. The decisive methods (DML, SimCLR) and the baselines run with every seed (--seeds).

Evaluation (`ecg_dml.evaluate.protocols`, cv='holdout'): the linear probe of every encoder and of the handcrafted
features on three tasks (superdiagnostic macro AUROC, NORM vs abnormal AUROC, age MAE) at 1/5/10/50/100 % of the
training labels; finetuning of the decisive encoders and supervised training from scratch on superdiagnostic at
1/10/100 %, one-cycle with early stopping on the validation loss (the best epoch is restored) and discriminative
learning rates for finetuning. Paired bootstrap differences on the same test ECGs answer the study's questions
(`QUESTIONS`), each with a plain-words verdict.

Resumable: every (method, seed) pretraining and every (method, seed, protocol) evaluation is stored under
<out>/work/ and skipped when present, so a killed run continues where it stopped (rerun the same command).

Outputs in --out: results.csv (long format), decisions.csv (+ tables/decisions.md: the questions, paired, per seed,
with verdicts), vs_baseline.csv, subgroups.csv, gaps.csv, pretrain_curves.csv and fit_curves.csv (learning curves),
timings.csv, tables/*.md, plots/*.png, run.json (command, settings, versions, wall times, machine), report.md.

Examples (from the repository root; `python -m benchmarks.study ...` is the same):
  python benchmarks/study.py --quick --out /tmp/study_quick        # CI: every table and plot in a few minutes
  python benchmarks/study.py --out benchmarks/results/full --jobs 2 # the full study (prints its plan and estimate)
  python benchmarks/study.py --estimate                             # only print the plan and the estimate
  python benchmarks/study.py --out benchmarks/results/full --jobs 2 --synthetic 4000
                                                                    # add the synthetic-corpus axis (same steps)
"""
from __future__ import annotations
import argparse, contextlib, io, json, os, platform, shlex, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
if __package__:   # python -m benchmarks.study, or imported as benchmarks.study (the tests)
    from .benchtools import cpu_model
    from .study_report import write_report
else:             # python benchmarks/study.py: Python puts this folder first on sys.path
    from benchtools import cpu_model
    from study_report import write_report

HERE = Path(__file__).resolve().parent

# study method name -> pretrain() arguments
STUDY_METHODS = {
    'dml': dict(method='dml'),                                       # the default: template kNN positives + InfoNCE
    'dml-paper': dict(method='dml-paper', distance='euclidean'),     # the DML paper's rule on raw signals (ablation)
    'dml-template-triplet': dict(method='dml-template-triplet'),     # template positives, the paper's triplet loss (ablation)
    'simclr': dict(method='simclr'),
    '3kg': dict(method='3kg'),
    'clocs-cmsc': dict(method='clocs-cmsc'),
    'pclr': dict(method='pclr'),
    'supdml': dict(method='supdml', target='superdiagnostic'),       # supervised: mines on the training labels
}
BASELINE, HANDCRAFTED = 'random-init', 'handcrafted'   # `evaluate` names the untrained twin 'random-init'
DECISIVE = ('dml', 'simclr')                           # every seed; finetuned (the baselines run every seed too)
TEST_FOLDS, VALID_FOLD = (9, 10), 8                    # the same split as benchmarks/dml_variants.py and the pretrained encoder
TASKS, FRACTIONS = ('superdiagnostic', 'norm_vs_abnormal', 'age'), (0.01, 0.05, 0.1, 0.5, 1.0)
FT_TASKS, FT_FRACTIONS = ('superdiagnostic',), (0.01, 0.1, 1.0)   # finetune / scratch (the expensive protocols)
SYNTHETIC_METHODS = ('dml', 'simclr')

# Measured seconds per pretraining optimizer step (xresnet1d18, batch 64, 10 s at 100 Hz, one torch thread, quiet
# 2-core CPU; from the previous full study and benchmarks/dml_variants.py) and per finetuning epoch per 1,000 ECGs.
# Only the printed estimate uses them; run.json records what each unit took.
S_PER_STEP = {'dml': 0.55, 'dml-paper': 0.35, 'dml-template-triplet': 0.5, 'simclr': 0.61, '3kg': 0.52,
              'clocs-cmsc': 0.35, 'pclr': 0.30, 'supdml': 0.28}
S_PER_FIT_EPOCH_1K = 3.0
S_LINEAR = 40.0              # embedding ~2,000 ECGs + 3 tasks x 5 fractions of probes
ENCODER_COST = {'xresnet1d18': 1.0, 'resnet1d18': 6.3}

QUICK = dict(steps=6, bs=32, seconds=2.5, seeds=[0], eval_epochs=2, patience=1, min_steps=2, n_boot=50, probe_cs=[1e-3, 0.1],
             methods=list(STUDY_METHODS))
# Full: 600 steps (about 28 epochs of folds 1-7 at batch 64); decisive comparisons with two seeds; finetune/scratch
# up to 40 epochs with patience 8, each epoch at least 10 optimizer steps (a small label fraction repeated), so 1 % of
# the labels trains for up to 400 steps, not 40 -- enough for training from scratch to level off (see fit_curves).
FULL = dict(steps=600, bs=64, seconds=10.0, seeds=[0, 1], eval_epochs=40, patience=8, min_steps=10, n_boot=1000, probe_cs=None,
            methods=list(STUDY_METHODS))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='study_results', help='output folder (created; an existing run resumes) [%(default)s]')
    p.add_argument('--quick', action='store_true', help=f'CI mode: tiny settings {QUICK}, the bundled 250-record '
                   'sample unless --data is given; every table and plot is produced')
    p.add_argument('--data', default=None, help='PTB-XL root or store folder [full: ../shared/data/ptbxl; quick: bundled sample]')
    p.add_argument('--methods', default=None, help=f'comma-separated study methods (the baselines always run) '
                   f'[all]; known: {", ".join(STUDY_METHODS)}')
    p.add_argument('--seeds', default=None, help=f'comma-separated seeds of the decisive methods {DECISIVE} and the '
                   f'baselines; the others run with the first [full: {",".join(map(str, FULL["seeds"]))}; quick: 0]')
    p.add_argument('--steps', type=int, default=None, help=f'pretraining optimizer steps, the same for every method '
                   f'and corpus [full {FULL["steps"]}, quick {QUICK["steps"]}]')
    p.add_argument('--bs', type=int, default=None, help=f'pretraining batch size [full {FULL["bs"]}, quick {QUICK["bs"]}]')
    p.add_argument('--lr', type=float, default=1e-3, help='pretraining learning rate [%(default)s]')
    p.add_argument('--encoder', default='xresnet1d18', help='encoder architecture for every method [%(default)s]')
    p.add_argument('--seconds', type=float, default=None, help=f'ECG length in s at 100 Hz [full {FULL["seconds"]:g}, quick {QUICK["seconds"]:g}]')
    p.add_argument('--eval-epochs', type=int, default=None, help=f'epoch cap of finetune/scratch (one-cycle, early '
                   f'stopping) [full {FULL["eval_epochs"]}, quick {QUICK["eval_epochs"]}]')
    p.add_argument('--patience', type=int, default=None, help=f'early-stopping patience in epochs [full {FULL["patience"]}, quick {QUICK["patience"]}]')
    p.add_argument('--min-steps', type=int, default=None, help=f'fewest optimizer steps per epoch of finetune/scratch '
                   f'(a small label fraction is repeated to fill them) [{FULL["min_steps"]}]')
    p.add_argument('--n-boot', type=int, default=None, help=f'bootstrap resamples per CI [full {FULL["n_boot"]}, quick {QUICK["n_boot"]}]')
    p.add_argument('--probe-cs', default=None, help='comma-separated inverse L2 strengths of the logistic probe '
                   '[full: the library default; quick: 0.001,0.1]')
    p.add_argument('--synthetic', type=int, default=0, metavar='N',
                   help='also pretrain --synthetic-methods on folds 1-7 plus N unlabeled synthetic ECGs, with the same '
                        'number of steps (needs deepfake-ecg) [%(default)s: off]')
    p.add_argument('--synthetic-methods', default=','.join(SYNTHETIC_METHODS), help='[%(default)s]')
    p.add_argument('--threads', type=int, default=1, help='torch threads per process [%(default)s]')
    p.add_argument('--jobs', type=int, default=1, help='worker processes running (method, seed) chains side by side '
                   '(2 on a quiet 2-core machine: about half the wall time) [%(default)s]')
    p.add_argument('--estimate', action='store_true', help='print the plan and its time estimate and exit')
    a = p.parse_args(argv)
    mode = QUICK if a.quick else FULL
    for k, v in mode.items():
        if getattr(a, k, None) is None: setattr(a, k, v)
    if not isinstance(a.methods, list): a.methods = [m for m in a.methods.split(',') if m]
    if not isinstance(a.seeds, list): a.seeds = [int(v) for v in a.seeds.split(',') if v]
    bad = [m for m in a.methods if m not in STUDY_METHODS]
    if bad: p.error(f'unknown method(s) {bad}; known: {", ".join(STUDY_METHODS)}')
    if not a.seeds: p.error('--seeds: at least one seed')
    if a.probe_cs is not None and not isinstance(a.probe_cs, list): a.probe_cs = [float(v) for v in a.probe_cs.split(',')]
    a.synthetic_methods = [m for m in a.synthetic_methods.split(',') if m]
    if a.synthetic:
        try: import ecg_dml.data.synthetic  # noqa: F401
        except ImportError as e: p.error(f'--synthetic needs ecg_dml.data.synthetic, which this installation lacks ({e})')
        bad = [m for m in a.synthetic_methods if m not in STUDY_METHODS or m in ('supdml', 'pclr')]
        if bad: p.error(f'--synthetic-methods: {bad} cannot pretrain on unlabeled synthetic ECGs without patients')
    return a


# ---------------------------------------------------------------- the plan
def base_method(m:str) -> str: return m.split('+syn')[0]

def seeds_of(a, m:str) -> list[int]:
    return list(a.seeds) if base_method(m) in DECISIVE or m in (BASELINE, HANDCRAFTED) else a.seeds[:1]

def plan(a) -> tuple[list, list]:
    "(pretraining units [(method, seed)], evaluation units [(method, seed, protocol)])"
    methods = list(a.methods) + [f'{m}+syn{a.synthetic}' for m in a.synthetic_methods if a.synthetic and m in a.methods]
    pre = [(m, s) for m in methods for s in seeds_of(a, m)]
    ev = [(m, s, 'linear') for m, s in pre] + [(m, s, 'finetune') for m, s in pre if m in DECISIVE]
    ev += [(BASELINE, s, p) for s in a.seeds for p in ('linear', 'scratch')] + [(HANDCRAFTED, s, 'linear') for s in a.seeds]
    return pre, ev

def unit_settings(a) -> dict:
    """What a stored unit depends on: a rerun with other values must not reuse it (not --synthetic or --seeds: units
    are named by them, so a later run can add seeds or the synthetic axis to a finished study)"""
    return dict(data=str(a.data), encoder=a.encoder, seconds=a.seconds, steps=a.steps, bs=a.bs, lr=a.lr,
                eval_epochs=a.eval_epochs, patience=a.patience, min_steps=a.min_steps, n_boot=a.n_boot, probe_cs=a.probe_cs,
                test_folds=list(TEST_FOLDS), valid_fold=VALID_FOLD, tasks=list(TASKS), fractions=list(FRACTIONS),
                ft_tasks=list(FT_TASKS), ft_fractions=list(FT_FRACTIONS))

def epochs_for(steps:int, n_train:int, bs:int) -> tuple[int, int]:
    "(epochs, optimizer steps they make): the training loader drops its last incomplete batch"
    per_epoch = max(1, n_train // bs)
    epochs = max(1, round(steps / per_epoch))
    return epochs, epochs * per_epoch

def synthetic_budget(steps:int, n_real:int, n_syn:int, bs:int) -> tuple[int, int, int]:
    """(epochs, optimizer steps, synthetic ECGs used) for `n_real` real + synthetic training ECGs at exactly `steps`
    optimizer steps: the fewest whole epochs whose batches divide `steps` and that real + synthetic ECGs fill exactly
    (the synthetic corpus, i.i.d. draws, is cut to fit); if none fits (too few synthetic ECGs for one more batch per
    epoch), every synthetic ECG and the epochs rounded as `epochs_for` does"""
    for e in range(1, steps + 1):
        need = steps // e * bs - n_real
        if steps % e == 0 and 0 <= need <= n_syn: return e, steps, need
    return (*epochs_for(steps, n_real + n_syn, bs), n_syn)

def estimate(a, n_records:int, pre, ev, n_syn:int=0) -> dict:
    "Predicted seconds per stage from the measured per-unit costs"
    scale = (a.seconds / 10) * ENCODER_COST.get(a.encoder, 1.0) * (a.bs / 64)
    pt = sum(S_PER_STEP[base_method(m)] * a.steps * scale for m, _ in pre)
    n_train = n_records * 0.7
    fit = len(FT_TASKS) * sum(FT_FRACTIONS) * n_train / 1000 * S_PER_FIT_EPOCH_1K * a.eval_epochs * 0.6 * scale
    evs = sum(S_LINEAR * n_records / 2000 if p == 'linear' else fit for _, _, p in ev)
    return dict(pretrain_s=pt, evaluate_s=evs, total_s=pt + evs)

def fmt_s(s:float) -> str: return f'{s / 3600:.1f} h' if s >= 5400 else f'{s / 60:.1f} min' if s >= 90 else f'{s:.0f} s'

def machine() -> dict:
    cpu = cpu_model()
    mem = next((int(l.split()[1]) // 1024 for l in Path('/proc/meminfo').read_text().splitlines()
                if l.startswith('MemTotal')), None) if Path('/proc/meminfo').exists() else None
    return dict(platform=platform.platform(), cpu=cpu, cpu_count=os.cpu_count(), memory_mb=mem,
                load_average=os.getloadavg() if hasattr(os, 'getloadavg') else None, hostname=platform.node())

def run_versions() -> dict:
    from ecg_dml.core import versions
    out = versions()
    try: out['git_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=HERE, capture_output=True, text=True,
                                            timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError): out['git_commit'] = None
    return out

def read_json(p:Path): return json.loads(p.read_text()) if p.exists() else None
def write_json(p:Path, obj):
    from ecg_dml.core import atomic_write
    p.parent.mkdir(parents=True, exist_ok=True); atomic_write(p, json.dumps(obj, indent=1, default=str))


# ---------------------------------------------------------------- data
def load_study_data(a, work:Path):
    from ecg_dml.core import sample_dir, shared_data_dir
    from ecg_dml.data.sources import open_ecgs
    if a.data is None:
        sd = shared_data_dir()
        a.data = str(sample_dir() if a.quick or sd is None else sd/'ptbxl')
    return open_ecgs(a.data, fs=100, seconds=a.seconds, dest=work/'store', progress=False)

def split_of(meta:pd.DataFrame) -> np.ndarray:
    "'train' (folds 1-7) / 'valid' (fold 8) / 'test' (folds 9, 10) per ECG"
    from ecg_dml.pretrain import pretrain_split
    return pretrain_split(meta, valid_folds=(VALID_FOLD,), test_folds=TEST_FOLDS)

def synthetic_signals(a, work:Path):
    "The synthetic corpus (built once, resumable) as an array [N, 12, T] in mV"
    from ecg_dml.data import synthetic as syn
    dest = work/f'synthetic_{a.synthetic}'; gen = dest/'generation.json'
    t0 = time.perf_counter()
    try: st = syn.synthetic_store(a.synthetic, dest, fs=100, seconds=a.seconds, seed=a.seeds[0], progress=False,
                                  n_workers=a.jobs if a.jobs > 1 else 0, threads=a.threads)
    except syn.SyntheticError as e: sys.exit(f'--synthetic: {e}')
    if not gen.exists():
        write_json(gen, dict(n=a.synthetic, seconds=round(time.perf_counter() - t0, 2), generator=syn.generator_version()))
    return st.get_batch(np.arange(len(st)))

def handcrafted_embeddings(signals, meta, work:Path):
    "The handcrafted features of every ECG as `Embeddings` (NaNs filled with the training folds' medians), cached"
    from ecg_dml.evaluate.embed import Embeddings
    from ecg_dml.evaluate.features import handcrafted_features, feature_matrix
    f = work/'handcrafted.npz'
    if f.exists(): return Embeddings.load(f)
    t0 = time.perf_counter()
    F = handcrafted_features(signals)
    X = feature_matrix(F, train_rows=np.flatnonzero(split_of(meta) == 'train'))
    e = Embeddings(meta.ecg_id.to_numpy(), X, {'features': 'handcrafted', 'columns': int(X.shape[1]),
                                               'seconds': round(time.perf_counter() - t0, 2)})
    e.save(f)
    return e


# ---------------------------------------------------------------- stages
def pretrain_unit(a, method:str, seed:int, signals, meta, folder:Path, syn_x=None) -> dict:
    "Pretrain `method` on folds 1-7 (fold 8 validates, 9-10 unread) for `a.steps` optimizer steps into `folder`"
    from ecg_dml.core import read_rows
    from ecg_dml.pretrain import pretrain
    done = read_json(folder/'done.json')
    if done and (folder/'encoder.pth').exists(): return {**done, 'status': 'skipped (done earlier)'}
    split, kw, data = split_of(meta), dict(STUDY_METHODS[base_method(method)]), signals
    n_real = int((split == 'train').sum())
    epochs, steps = epochs_for(a.steps, n_real, a.bs)   # the real-only arms' budget
    n_syn = 0
    if syn_x is not None:   # real training/validation ECGs + synthetic ones (all training), at the real arms' steps exactly
        epochs, steps, n_syn = synthetic_budget(steps, n_real, len(syn_x), a.bs)
        use = np.flatnonzero(split != 'test')
        data = np.concatenate([read_rows(signals, use), syn_x[:n_syn]]).astype(np.float32)
        split = np.concatenate([split[use], np.full(n_syn, 'train')])
    if kw.get('labels') == 'superdiagnostic':   # supervised DML: the label set of each ECG as its class
        kw['labels'] = meta.superdiagnostic.astype(str).to_numpy()
    n_train = n_real + n_syn
    resume = (folder/'checkpoint.pth').exists()
    t0 = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pretrain(data, encoder=a.encoder, epochs=epochs, bs=a.bs, lr=a.lr, fs=100, seconds=a.seconds, split=split,
                 out=folder, seed=seed, progress=False, resume=resume, overwrite=not resume, **kw)
    (folder/'stdout.log').write_text(log.getvalue())
    t = dict(stage='pretrain', method=method, seed=seed, seconds=round(time.perf_counter() - t0, 2), n_train=n_train,
             n_synthetic=n_syn, epochs=epochs, steps=steps, steps_per_epoch=steps // epochs, status='run')
    write_json(folder/'done.json', t)
    return t

def evaluate_unit(a, method:str, seed:int, protocol:str, signals, meta, folder:Path, feats=None) -> dict:
    "Evaluate one encoder (a pretrained one, the random-init baseline, or the handcrafted features) with one protocol"
    from ecg_dml.evaluate.protocols import evaluate
    done = read_json(folder/'done.json')
    if done: return {**done, 'status': 'skipped (done earlier)'}
    spec = (a.encoder if method == BASELINE else feats if method == HANDCRAFTED
            else str(folder.parents[3]/'pretrain'/method/f'seed{seed}'/'encoder.pth'))   # folder: work/eval/<method>/seed<s>/<protocol>
    tasks, fractions = (TASKS, FRACTIONS) if protocol == 'linear' else (FT_TASKS, FT_FRACTIONS)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        part = evaluate(spec, (signals, meta), tasks=tasks, protocols=(protocol,), fractions=fractions, seeds=(seed,),
                        cv='holdout', test_folds=TEST_FOLDS, valid_folds=(VALID_FOLD,), random_init=method == BASELINE,
                        name=method, epochs=a.eval_epochs, patience=a.patience, min_steps=a.min_steps, n_boot=a.n_boot, retrieval=False,
                        subgroup_fraction=1.0 if protocol == 'linear' else None, verbose=False,
                        probe_kw=None if a.probe_cs is None else dict(Cs=tuple(a.probe_cs), n_folds=2))
    part.save(folder, plots=False, features=False)
    t = dict(stage='evaluate', method=method, seed=seed, protocol=protocol, seconds=round(time.perf_counter() - t0, 2),
             status='run')
    write_json(folder/'done.json', t)
    return t

def chains(pre, ev) -> list[tuple[tuple|None, list]]:
    "Independent work items: each (method, seed) pretraining with the evaluations of its encoder; each baseline evaluation"
    out = [((m, s), [(m2, s2, p) for m2, s2, p in ev if (m2, s2) == (m, s)]) for m, s in pre]
    return out + [(None, [u]) for u in ev if u[0] in (BASELINE, HANDCRAFTED)]

_W = {}   # per worker process: the study's data, loaded once
def _worker_init(a, work):
    import torch
    torch.set_num_threads(a.threads)
    _W['data'] = load_study_data(a, work)
    _W['syn'] = synthetic_signals(a, work) if a.synthetic else None
    _W['feats'] = handcrafted_embeddings(*_W['data'], work)

def run_chain(a, chain, work:Path, data=None, syn_x=None, feats=None) -> list[dict]:
    "Run one chain (in this process or a worker) and return its unit timings"
    signals, meta = data if data is not None else _W['data']
    syn_x, feats = (syn_x, feats) if data is not None else (_W['syn'], _W['feats'])
    unit, evs = chain
    ts = []
    if unit:
        m, s = unit
        ts.append(pretrain_unit(a, m, s, signals, meta, work/'pretrain'/m/f'seed{s}', syn_x if '+syn' in m else None))
    for m, s, p in evs:
        ts.append(evaluate_unit(a, m, s, p, signals, meta, work/'eval'/m/f'seed{s}'/p, feats))
    return ts

def _unit_line(t) -> str:
    what = f"{t['method']} seed {t['seed']}" + (f" {t['protocol']}" if t['stage'] == 'evaluate' else f" ({t.get('steps')} steps)")
    return f"{t['stage']} {what}: {t['seconds']:.1f} s {t['status']}"

def run_units(a, pre, ev, data, work:Path, syn_x, feats) -> list[dict]:
    """Every unit, in `a.jobs` processes: chains are independent, so with --jobs N they run N at a time (longest
    predicted first), each process with --threads torch threads. Units already done are skipped (resume)."""
    todo = chains(pre, ev)
    n_units, done, timings = len(pre) + len(ev), 0, []
    def report(ts):
        nonlocal done
        for t in ts:
            done += 1; timings.append(t)
            print(f'[{done}/{n_units}] {_unit_line(t)}', flush=True)
    if a.jobs <= 1:
        for c in todo: report(run_chain(a, c, work, data, syn_x, feats))
        return timings
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    cost = lambda c: estimate(a, len(data[1]), [c[0]] if c[0] else [], c[1])['total_s']
    with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context('spawn'), initializer=_worker_init, initargs=(a, work)) as ex:
        futs = {ex.submit(run_chain, a, c, work): c for c in sorted(todo, key=lambda c: -cost(c))}
        for f in as_completed(futs):
            try: report(f.result())
            except Exception as e:   # stop at once (finished units are kept; a rerun resumes), naming the unit
                ex.shutdown(wait=False, cancel_futures=True)
                unit, evs = futs[f]
                what = f'pretraining {unit[0]} seed {unit[1]} or its evaluations' if unit else 'evaluation {} seed {} {}'.format(*evs[0])
                raise RuntimeError(f'{what} failed in a worker process: {type(e).__name__}: {e}') from e
    order = {u: i for i, u in enumerate([('pretrain', m, s, None) for m, s in pre] + [('evaluate', *u) for u in ev])}
    return sorted(timings, key=lambda t: order[(t['stage'], t['method'], t['seed'], t.get('protocol'))])


def collect(ev, pre, work:Path) -> dict[str, pd.DataFrame]:
    "Every unit's stored results, subgroups, predictions and curves, in one table each"
    from ecg_dml.evaluate.protocols import load_results
    parts = [load_results(work/'eval'/m/f'seed{s}'/p) for m, s, p in ev]
    cat = lambda dfs: pd.concat([d for d in dfs if len(d)], ignore_index=True) if any(len(d) for d in dfs) else pd.DataFrame()
    logs = []
    for m, s in pre:
        f = work/'pretrain'/m/f'seed{s}'/'log.csv'
        t = read_json(work/'pretrain'/m/f'seed{s}'/'done.json') or {}
        if f.exists(): logs.append(pd.read_csv(f).assign(method=m, seed=s, step=lambda d: d.epoch.add(1) * t.get('steps_per_epoch', np.nan)))
    return dict(results=cat([p.results for p in parts]), subgroups=cat([p.subgroups for p in parts]),
                predictions=cat([p.predictions for p in parts]), fit_curves=cat([p.curves for p in parts]),
                pretrain_curves=cat(logs))


def main(argv=None):
    a = parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    t_start = time.time()
    vers = run_versions()   # at the start: the commit of the code that runs
    out = Path(a.out); work = out/'work'
    out.mkdir(parents=True, exist_ok=True); work.mkdir(exist_ok=True)
    (out/'.gitignore').write_text('work/\n')   # checkpoints and per-unit parts stay out of version control
    stages = {}
    t0 = time.perf_counter()
    signals, meta = load_study_data(a, work)
    stages['data'] = round(time.perf_counter() - t0, 2)
    pre, ev = plan(a)
    split = split_of(meta)
    n_train = int((split == 'train').sum())
    epochs, steps = epochs_for(a.steps, n_train, a.bs)
    est = estimate(a, len(meta), pre, ev)
    print(f'study: {len(meta)} ECGs ({a.data}), {a.seconds:g} s at 100 Hz; train folds 1-7 ({n_train}), valid fold '
          f'{VALID_FOLD} ({int((split == "valid").sum())}), test folds {TEST_FOLDS} ({int((split == "test").sum())})')
    print(f'plan: {len(a.methods)} methods + {BASELINE} + {HANDCRAFTED}, seeds {a.seeds} for {", ".join(DECISIVE)} and '
          f'the baselines; {len(pre)} pretrainings of {steps} steps ({epochs} epochs of {steps // epochs} at batch '
          f'{a.bs}), {len(ev)} evaluations; finetune/scratch up to {a.eval_epochs} epochs, patience {a.patience}')
    if a.synthetic:
        e_s, s_s, n_s = synthetic_budget(steps, n_train, a.synthetic, a.bs)
        print(f'synthetic axis: {", ".join(a.synthetic_methods)} on the {n_train} real + {n_s} of the {a.synthetic} synthetic '
              f'ECGs: {s_s} steps ({e_s} epochs of {s_s // e_s})')
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
    t0 = time.perf_counter()
    feats = handcrafted_embeddings(signals, meta, work)
    stages['handcrafted_features'] = round(time.perf_counter() - t0, 2)
    timings = run_units(a, pre, ev, (signals, meta), work, syn_x, feats)
    t0 = time.perf_counter()
    tabs = collect(ev, pre, work)
    files = write_report(out, **tabs, timings=pd.DataFrame(timings), methods=list(dict.fromkeys(m for m, *_ in ev)),
                         n_boot=a.n_boot, seed=a.seeds[0])
    stages['report'] = round(time.perf_counter() - t0, 2)
    T = pd.DataFrame(timings)
    stages['pretrain_run'] = round(T.query("stage == 'pretrain' and status == 'run'").seconds.sum(), 2) if len(T) else 0
    stages['evaluate_run'] = round(T.query("stage == 'evaluate' and status == 'run'").seconds.sum(), 2) if len(T) else 0
    run = dict(command=' '.join(shlex.quote(v) for v in ['python', *sys.argv]) if argv is None else argv,
               mode='quick' if a.quick else 'full', settings=settings, methods=a.methods, seeds=a.seeds,
               decisive=list(DECISIVE), synthetic=a.synthetic, jobs=a.jobs, threads=a.threads, n_records=len(meta),
               split={k: int((split == k).sum()) for k in ('train', 'valid', 'test')},
               pretrain_steps=steps, pretrain_epochs=epochs, estimate_s={k: round(v) for k, v in est.items()},
               stage_seconds=stages, units_run=int((T.status == 'run').sum()), units_skipped=int((T.status != 'run').sum()),
               unit_seconds=T.to_dict('records'), wall_seconds=round(time.time() - t_start, 1),
               started=time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t_start)), versions=vers,
               synthetic_generation=read_json(work/f'synthetic_{a.synthetic}'/'generation.json') if a.synthetic else None,
               machine=machine(), files=sorted(str(f.relative_to(out)) for f in files))
    # a study may be completed by several invocations (a killed run resumed, seeds or synthetic units added later):
    # each is recorded, so the total wall time is known
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


if __name__ == '__main__':
    main()
