"""Train, test and register the pretrained encoder shipped in the package (`ecg_dml-ptbxl-xresnet1d18`).

    python benchmarks/pretrained/train.py --work /tmp/pretrained_work          # train (resumable), test, write the weights
    python benchmarks/pretrained/train.py --work W --budget-check              # same budget on folds 1-7, kNN probe on fold 8
    python benchmarks/pretrained/train.py --work W --reproduce                 # re-measure the shipped card's results

Stages, each resumable (a killed run started again with the same --work continues where it stopped):

1. data: the PTB-XL copy beside the repository (`../shared/data/ptbxl`), 12 leads, 100 Hz, 10 s, in mV.
2. pretrain: the study's default self-supervised DML (`method='dml'`: template kNN positives + InfoNCE, with its
   augmentations) on the **train folds 1-8 only**, xresnet1d18, batch 64, lr 1e-3 one-cycle, --steps optimizer steps,
   seed 0. Folds 9-10 are never read by the pretraining.
3. test: linear probes (logistic for superdiagnostic, ridge for age; regularisation chosen by CV inside folds 1-8) on
   the frozen embeddings, trained on folds 1-8 (100 % and 10 % of their labels) and scored on folds 9-10, for the
   pretrained encoder, the same architecture with random weights (`random-init`) and the handcrafted ECG features
   (`ecg_dml.evaluate.features`), each with a bootstrap 95 % CI, and the paired bootstrap differences.
4. register: `write_pretrained` writes weights + card.json + card.md into `ecg_dml/pretrained/<name>` (or --registry).

Only the library's public functions are used; the numbers in the shipped card are what stage 3 printed, and
`--reproduce` recomputes them from the shipped weights (tests/test_pretrained_card.py does it on every CI run).
"""
from __future__ import annotations
import argparse, contextlib, io, json, shlex, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAME = 'ecg_dml-ptbxl-xresnet1d18'
TRAIN_FOLDS, TEST_FOLDS, CHECK_VALID_FOLD = tuple(range(1, 9)), (9, 10), 8
TASKS, FRACTIONS = ('superdiagnostic', 'age'), (1.0, 0.1)
HEADLINE = {'superdiagnostic': ('auroc', 'macro'), 'age': ('mae', 'age')}
# The shipped encoder's budget. The study (benchmarks/results/full) pretrained DML for 600 steps on folds 1-7 and its
# kNN probe on fold 8 was still rising at the end (0.78 -> 0.90 / 0.88); 2,000 steps (~86 epochs of folds 1-8) fit
# the 60 minutes on 2 CPU cores and were checked on folds 1-7 / fold 8 with --budget-check first.
FULL = dict(steps=2000, bs=64, lr=1e-3, seconds=10.0, n_boot=1000, encoder='xresnet1d18', method='dml', seed=0)
QUICK = dict(steps=8, bs=32, lr=1e-3, seconds=10.0, n_boot=50, encoder='xresnet1d18', method='dml', seed=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work', required=True, help='work folder: store, checkpoints, evaluations (an existing one resumes)')
    p.add_argument('--data', default=None, help='PTB-XL root [../shared/data/ptbxl]')
    p.add_argument('--steps', type=int, default=None, help=f'pretraining optimizer steps [{FULL["steps"]}; quick {QUICK["steps"]}]')
    p.add_argument('--quick', action='store_true', help=f'a short budget for tests: {QUICK}')
    p.add_argument('--budget-check', action='store_true', help='pretrain on folds 1-7 with the kNN probe on fold 8 '
                   'each epoch, to see that the budget is not past its best; nothing is tested or registered')
    p.add_argument('--reproduce', action='store_true', help="re-run stage 3 on the registered encoder's weights and "
                   'compare with its card (exit 1 on a difference)')
    p.add_argument('--registry', default=None, help="where to register the encoder [the package's ecg_dml/pretrained]")
    p.add_argument('--name', default=NAME, help='[%(default)s]')
    p.add_argument('--threads', type=int, default=None, help='torch threads [torch default]')
    p.add_argument('--no-register', action='store_true', help='train and test only')
    a = p.parse_args(argv)
    mode = QUICK if a.quick else FULL
    a.settings = {**mode, **({'steps': a.steps} if a.steps else {})}
    if a.data is None:
        from ecg_dml.core import shared_data_dir
        sd = shared_data_dir()
        if sd is None: p.error('no --data and no ../shared/data beside the repository (set ECG_DML_SHARED)')
        a.data = str(sd/'ptbxl')
    a.work = Path(a.work)
    return a


def git_commit() -> str|None:
    try: return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError): return None

def write_json(p:Path, obj):
    from ecg_dml.core import atomic_write
    p.parent.mkdir(parents=True, exist_ok=True); atomic_write(p, json.dumps(obj, indent=1, default=str) + '\n')

def read_json(p:Path): return json.loads(p.read_text()) if p.exists() else None


# ---------------------------------------------------------------- stages
def load_data(a):
    from ecg_dml.data.sources import open_ecgs
    return open_ecgs(a.data, fs=100, seconds=a.settings['seconds'], dest=a.work/'store', progress=False)

def split_of(meta:pd.DataFrame, check:bool=False) -> np.ndarray:
    "'train' / 'valid' / 'test' per ECG: folds 1-8 train (1-7 and fold 8 validating for --budget-check), 9-10 test"
    from ecg_dml.pretrain import pretrain_split
    return pretrain_split(meta, valid_folds=(CHECK_VALID_FOLD,) if check else (), test_folds=TEST_FOLDS)

def epochs_for(steps:int, n_train:int, bs:int) -> tuple[int, int]:
    "(epochs, optimizer steps they make): the training loader drops its last incomplete batch"
    per_epoch = max(1, n_train // bs)
    epochs = max(1, round(steps / per_epoch))
    return epochs, epochs * per_epoch

def pretrain_stage(a, signals, meta, folder:Path, check:bool=False) -> dict:
    "Pretrain (or resume) into `folder`; returns what was done"
    from ecg_dml.pretrain import pretrain
    done = read_json(folder/'done.json')
    if done and (folder/'encoder.pth').exists(): return done
    s, split = a.settings, split_of(meta, check)
    n_train = int((split == 'train').sum())
    epochs, steps = epochs_for(s['steps'], n_train, s['bs'])
    resume = (folder/'checkpoint.pth').exists()
    print(f'pretrain {s["method"]} ({s["encoder"]}) on {n_train} ECGs of folds '
          f'{"1-7" if check else "1-8"}: {epochs} epochs = {steps} steps of batch {s["bs"]}' + (' (resuming)' if resume else ''), flush=True)
    t0 = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pretrain(signals, method=s['method'], encoder=s['encoder'], epochs=epochs, bs=s['bs'], lr=s['lr'], fs=100,
                 seconds=s['seconds'], split=split, out=folder, seed=s['seed'], probe=check, progress=False,
                 resume=resume, overwrite=not resume)
    (folder/'stdout.log').write_text(log.getvalue())
    done = dict(n_train=n_train, epochs=epochs, steps=steps, seconds=round(time.perf_counter() - t0, 1),
                folds='1-7 (fold 8 validates)' if check else '1-8', resumed=resume, commit=git_commit(),
                command=' '.join(['python', *map(shlex.quote, sys.argv)]))
    write_json(folder/'done.json', done)
    return done

def handcrafted(signals, meta, work:Path):
    "The handcrafted ECG features as `Embeddings` (missing values: the training folds' medians), cached"
    from ecg_dml.evaluate.embed import Embeddings
    from ecg_dml.evaluate.features import handcrafted_features, feature_matrix
    f = work/'handcrafted.npz'
    if f.exists(): return Embeddings.load(f)
    F = handcrafted_features(signals)
    X = feature_matrix(F, train_rows=np.flatnonzero(split_of(meta) == 'train'))
    e = Embeddings(meta.ecg_id.to_numpy(), X, {'features': 'handcrafted', 'columns': int(X.shape[1])})
    e.save(f)
    return e

def test_stage(a, signals, meta, encoder, work:Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    "Linear probes of the encoder, random-init and the handcrafted features on folds 9-10: (metrics, predictions)"
    from ecg_dml.evaluate.protocols import evaluate
    res, preds = work/'results.csv', work/'predictions.csv'
    if res.exists() and preds.exists(): return pd.read_csv(res), pd.read_csv(preds)
    kw = dict(tasks=TASKS, protocols=('linear',), fractions=FRACTIONS, seeds=(a.settings['seed'],), cv='holdout',
              test_folds=TEST_FOLDS, valid_folds=(), n_boot=a.settings['n_boot'], retrieval=False,
              subgroup_fraction=None, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        parts = [evaluate(encoder, (signals, meta), random_init=True, name=a.name, **kw),
                 evaluate(handcrafted(signals, meta, work), (signals, meta), random_init=False, name='handcrafted', **kw)]
    R = pd.concat([p.results for p in parts], ignore_index=True)
    P = pd.concat([p.predictions for p in parts], ignore_index=True)
    work.mkdir(parents=True, exist_ok=True)
    P.to_csv(preds, index=False); R.to_csv(res, index=False)
    return R, P

def results_table(R:pd.DataFrame, P:pd.DataFrame, name:str, n_boot:int, seed:int=0) -> list[dict]:
    """The card's results: per task and label fraction, each model's headline metric with its bootstrap 95 % CI (as
    `evaluate` measured it), and the pretrained encoder minus each baseline (paired bootstrap on the same test ECGs)"""
    from ecg_dml.evaluate.metrics import paired_bootstrap
    rows = []
    for task in TASKS:
        metric, target = HEADLINE[task]
        label = ('macro ' if task == 'superdiagnostic' else '') + metric.upper()
        for frac in FRACTIONS:
            got = {}
            for model in (name, 'random-init', 'handcrafted'):
                r = R[(R.encoder == model) & (R.task == task) & np.isclose(R.fraction, frac) & (R.fold == 0)
                      & (R.metric == metric) & (R.target == target)]
                if len(r) != 1: raise RuntimeError(f'{model} {task} {frac}: {len(r)} result rows, expected 1')
                r = r.iloc[0]
                rows.append(dict(task=task, metric=label, labels=f'{frac:.0%}', model=model, value=round(float(r.value), 4),
                                 ci_low=round(float(r.ci_low), 4), ci_high=round(float(r.ci_high), 4), n_test=int(r.n_test)))
                g = P[(P.encoder == model) & (P.task == task) & np.isclose(P.fraction, frac)].sort_values(['ecg_id', 'target'])
                C = g.target.nunique()
                got[model] = (g.y.to_numpy().reshape(-1, C), g.pred.to_numpy().reshape(-1, C), g.ecg_id.to_numpy()[::C])
            y, s1, ids = got[name]
            for ref in ('random-init', 'handcrafted'):
                y2, s2, ids2 = got[ref]
                if not ((ids == ids2).all() and np.allclose(y, y2, equal_nan=True)):
                    raise RuntimeError(f'{name} and {ref} were tested on different ECGs')
                d = paired_bootstrap(y, s1, s2, metric, n_boot=n_boot, seed=seed)
                rows.append(dict(task=task, metric=label, labels=f'{frac:.0%}', model=f'{name} minus {ref} (paired)',
                                 value=round(d['diff'], 4), ci_low=round(d['ci_low'], 4), ci_high=round(d['ci_high'], 4),
                                 n_test=len(y)))
    return rows

def facts(a, done:dict, rows:list[dict], n_records:int) -> dict:
    from ecg_dml.models.pretrained import PTBXL_SOURCE
    s = a.settings
    def val(task, model):
        return next(r['value'] for r in rows if r['task'] == task and r['labels'] == '100%' and r['model'] == model)
    n_test = next(r['n_test'] for r in rows if r['task'] == 'superdiagnostic')
    summary = (f"A 12-lead ECG encoder (xresnet1d18) pretrained without labels by self-supervised deep metric learning on "
               f"PTB-XL folds 1-8. A linear probe on its embeddings of {n_test} unseen ECGs (PTB-XL folds 9-10) reaches "
               f"{val('superdiagnostic', a.name):.3f} superdiagnostic macro AUROC and {val('age', a.name):.1f} years age MAE, "
               f"against {val('superdiagnostic', 'random-init'):.3f} / {val('age', 'random-init'):.1f} for the same "
               f"network untrained and {val('superdiagnostic', 'handcrafted'):.3f} / {val('age', 'handcrafted'):.1f} for "
               "handcrafted ECG measurements; see Results for CIs and the paired differences.")
    return dict(
        summary=summary,
        training={**PTBXL_SOURCE, 'records': f'{done["n_train"]} ECGs of PTB-XL strat_folds 1-8 (the copy beside the '
                  f'repository, {n_records} records; folds 9-10 held out), 100 Hz, 10 s, no labels used',
                  'preprocessing': "open_ecgs(fs=100, seconds=10): WFDB physical units in mV, no filtering"},
        method=dict(name=s['method'], description="ecg_dml's default self-supervised DML: each ECG's positives are its "
                    "nearest neighbours by the distance between beat-aligned median templates, InfoNCE loss over the "
                    "batch, with the method's augmentations (see nbs/33_metric.methods)", embedding='the encoder output '
                    '(pooled features, before the projection head used in training)'),
        budget=dict(steps=done['steps'], epochs=done['epochs'], batch_size=s['bs'], lr=s['lr'], schedule='one-cycle',
                    seed=s['seed'], seconds=done.get('seconds'), hardware='2 CPU cores',
                    script='benchmarks/pretrained/train.py', command=done.get('command'),
                    card_written_by=' '.join(['python', *map(shlex.quote, sys.argv)])),
        commit=git_commit(),
        trained_at_commit=done.get('commit'),
        results=rows,
        evaluation=dict(protocol='linear probe on frozen embeddings: logistic regression (superdiagnostic, 5 labels) / '
                        'ridge (age), L2 strength by 5-fold CV on the training part', train='PTB-XL folds 1-8 (100 % '
                        'of their labels, or a 10 % draw, seed 0)', test='PTB-XL folds 9-10', ci='bootstrap 95 % over '
                        f'test ECGs, {s["n_boot"]} resamples; differences paired on the same ECGs',
                        baselines='random-init: the same architecture with random weights (seed 0); handcrafted: 153 '
                        'ECG measurements (intervals, axes, amplitudes, signal statistics), ecg_dml.evaluate.features'))


def budget_check_facts(work:Path) -> dict|None:
    "What the --budget-check run (folds 1-7, kNN probe on fold 8 each epoch) showed, if it ran in `work`"
    f = work/'budget_check'/'log.csv'
    if not f.exists(): return None
    log = pd.read_csv(f)
    done = read_json(work/'budget_check'/'done.json') or {}
    spe = done.get('steps', 0) // max(1, done.get('epochs', 1)) or None
    at = lambda e: round(float(log.knn_auroc.iloc[min(e, len(log) - 1)]), 3)
    return dict(what='the same budget on folds 1-7, a kNN probe (NORM vs abnormal, AUROC) on fold 8 after every epoch',
                steps=done.get('steps'), first_epoch=at(0), **({'after_600_steps': at(600 // spe - 1)} if spe else {}),
                last_epoch=at(len(log) - 1), best=round(float(log.knn_auroc.max()), 3),
                best_epoch=int(log.knn_auroc.idxmax()) + 1, epochs=len(log),
                log='benchmarks/pretrained/budget_check.csv')

def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    signals, meta = load_data(a)
    print(f'{len(meta)} ECGs from {a.data}', flush=True)
    if a.budget_check:
        done = pretrain_stage(a, signals, meta, a.work/'budget_check', check=True)
        log = pd.read_csv(a.work/'budget_check'/'log.csv') if (a.work/'budget_check'/'log.csv').exists() else None
        print(json.dumps(done))
        if log is not None and 'knn_auroc' in log: print(log[['epoch', 'train_loss', 'knn_auroc']].to_string(index=False))
        return
    if a.reproduce:
        from ecg_dml.models.pretrained import load_pretrained
        enc, card = load_pretrained(a.name, root=a.registry)
        a.settings = {**a.settings, 'n_boot': card['evaluation'].get('n_boot', a.settings['n_boot'])} if 'evaluation' in card else a.settings
        rows = results_table(*test_stage(a, signals, meta, enc, a.work/'reproduce'), a.name, a.settings['n_boot'])
        want = pd.DataFrame(card['results']).set_index(['task', 'labels', 'model'])
        got = pd.DataFrame(rows).set_index(['task', 'labels', 'model'])
        d = (got[['value', 'ci_low', 'ci_high']] - want.loc[got.index, ['value', 'ci_low', 'ci_high']]).abs().max().max()
        print(got.to_string()); print(f'largest difference from the card: {d:.2g}')
        sys.exit(0 if d <= 1e-3 else 1)
    folder = a.work/'pretrain'
    done = pretrain_stage(a, signals, meta, folder)
    print(f'pretrained: {done}', flush=True)
    from ecg_dml.models.io import load_encoder
    enc, cfg = load_encoder(folder/'encoder.pth', device='cpu')
    rows = results_table(*test_stage(a, signals, meta, enc, a.work/'test'), a.name, a.settings['n_boot'])
    print(pd.DataFrame(rows).to_string(index=False), flush=True)
    f = facts(a, done, rows, len(meta))
    f['evaluation']['n_boot'] = a.settings['n_boot']
    bc = budget_check_facts(a.work)
    if bc: f['budget']['check'] = bc
    write_json(a.work/'facts.json', f)
    if not a.no_register:
        from ecg_dml.models.pretrained import write_pretrained
        out = write_pretrained(folder/'encoder.pth', f, name=a.name, root=a.registry, overwrite=True)
        print(f'registered {out}')
    print(f'total {time.perf_counter() - t0:.0f} s')


if __name__ == '__main__':
    main()
