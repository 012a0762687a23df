"""Does self-supervised DML learn? The DML variants against a random-init encoder and SimCLR, at equal optimizer steps.

Pretrains each variant on PTB-XL folds 1-7 (fold 8 validates the pretraining) of the shared 1,987 records, embeds every
ECG with the encoder, fits a linear probe (standardised logistic regression, CV-chosen L2) on folds 1-8 and scores the
superdiagnostic macro AUROC on folds 9-10, with bootstrap CIs and paired bootstrap differences against random-init and
SimCLR of the same seed. Every variant: the same encoder (xresnet1d18), split, batch size, epochs, hence optimizer
steps. Resumable: a finished (variant, seed) is not redone; an interrupted pretraining resumes from its checkpoint.

    python benchmarks/dml_variants.py --out benchmarks/results/dml_variants --epochs 40 --seeds 0 1 --jobs 2
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
import numpy as np, pandas as pd

VARIANTS = {   # name -> pretrain(method=...); 'random-init' is the untrained encoder
    'random-init': None,
    'dml-paper': 'dml-paper',                        # raw-signal nearest / one of 2 farthest, triplet (the paper)
    'dml-template-triplet': 'dml-template-triplet',  # template-kNN positives, semi-hard triplet
    'dml-template-infonce': 'dml-template-infonce',  # template-kNN positives, InfoNCE
    'dml': 'dml',                                    # template-kNN positives + own view, InfoNCE (hybrid)
    'simclr': 'simclr',
}
ENCODER, BS, LR = 'xresnet1d18', 64, 3e-3

def _split(meta:pd.DataFrame) -> np.ndarray:
    f = meta['strat_fold'].to_numpy()
    return np.where(f <= 7, 'train', np.where(f == 8, 'valid', 'test'))

def open_store(work:Path, shared:Path, n_workers:int):
    from ecg_dml.data.ptbxl import ptbxl_index
    from ecg_dml.data.store import build_store, ECGStore
    if (work/'store'/'beats.csv').exists(): return ECGStore(work/'store')
    idx = ptbxl_index(shared/'ptbxl', fs=100, drop_missing=True).reset_index()
    idx = idx[['ecg_id', 'patient_id', 'age', 'sex', 'strat_fold', 'superdiagnostic', 'path']]
    return build_store(idx, work/'store', fs=100, seconds=10, n_workers=n_workers, progress=False, beats=True)

def run_unit(variant:str, seed:int, work:str, epochs:int, threads:int) -> dict:
    "Pretrain (or not), embed, probe: one (variant, seed); writes work/variant/seedN/{probe.npz, done.json}"
    import torch
    torch.set_num_threads(threads)
    from ecg_dml.core import atomic_write, set_seed
    from ecg_dml.data.store import ECGStore
    from ecg_dml.models.heads import create_encoder
    from ecg_dml.pretrain import pretrain
    from ecg_dml.evaluate.embed import embed_dataset
    from ecg_dml.evaluate.protocols import task_targets, linear_probe
    work = Path(work); d = work/variant/f'seed{seed}'; d.mkdir(parents=True, exist_ok=True)
    if (d/'done.json').exists(): return json.loads((d/'done.json').read_text())
    store = ECGStore(work/'store'); meta = store.meta
    t0 = time.time()
    if VARIANTS[variant] is None:
        set_seed(seed); enc = create_encoder(ENCODER, n_leads=12).eval()
    else:
        learn = pretrain(store, method=VARIANTS[variant], encoder=ENCODER, epochs=epochs, bs=BS, lr=LR, split=_split(meta),
                         seed=seed, out=d/'run', resume=True, progress=False)
        enc = learn.model.encoder.eval()
    t_pre = time.time() - t0
    emb = embed_dataset(enc, store, bs=256, device='cpu').values
    rows, y, classes, kind = task_targets(meta, 'superdiagnostic')
    f = meta['strat_fold'].to_numpy()[rows]
    tr, te = rows[f <= 8], rows[f >= 9]
    p = linear_probe(emb[tr], y[f <= 8], emb[te], kind, seed=seed)
    np.savez(d/'probe.npz', ids=meta['ecg_id'].to_numpy()[te], y=y[f >= 9], p=p, classes=np.array(classes))
    steps = int(np.ceil((_split(meta) == 'train').sum() / BS)) * epochs if VARIANTS[variant] else 0
    done = dict(variant=variant, seed=seed, pretrain_seconds=round(t_pre, 1), total_seconds=round(time.time() - t0, 1),
                optimizer_steps=steps, n_train=int(len(tr)), n_test=int(len(te)))
    atomic_write(d/'done.json', json.dumps(done))   # the resume marker: never a half-written file
    return done

def report(out:Path, work:Path, variants, seeds, n_boot:int=1000):
    "linear_probe.csv (per variant and seed), paired.csv (paired differences), logs.csv (pretraining curves)"
    from ecg_dml.evaluate.metrics import bootstrap_metrics, paired_bootstrap
    P = {(v, s): np.load(work/v/f'seed{s}'/'probe.npz') for v in variants for s in seeds if (work/v/f'seed{s}'/'probe.npz').exists()}
    rows, comp, logs = [], [], []
    for (v, s), z in P.items():
        b = bootstrap_metrics(z['y'], z['p'], metrics=['auroc'], classes=list(z['classes']), n_boot=n_boot, seed=s)
        m = b[b.target == 'macro'].iloc[0]
        done = json.loads((work/v/f'seed{s}'/'done.json').read_text())
        rows.append(dict(variant=v, seed=s, auroc=m.value, ci_low=m.ci_low, ci_high=m.ci_high, n_test=int(m.n),
                         optimizer_steps=done['optimizer_steps'], pretrain_seconds=done['pretrain_seconds']))
        for base in ('random-init', 'simclr'):
            if base != v and (base, s) in P:
                zb = P[(base, s)]
                assert (zb['ids'] == z['ids']).all()
                r = paired_bootstrap(z['y'], z['p'], zb['p'], 'auroc', n_boot=n_boot, seed=s)
                comp.append(dict(variant=v, baseline=base, seed=s, **{k: r[k] for k in ('value1', 'value2', 'diff', 'ci_low', 'ci_high', 'p_value')}))
        lf = work/v/f'seed{s}'/'run'/'log.csv'
        if lf.exists(): logs.append(pd.read_csv(lf).assign(variant=v, seed=s))
    R, C = pd.DataFrame(rows), pd.DataFrame(comp)
    R.to_csv(out/'linear_probe.csv', index=False); C.to_csv(out/'paired.csv', index=False)   # not results.csv: not a study run
    if logs: pd.concat(logs, ignore_index=True).to_csv(out/'logs.csv', index=False)
    return R, C

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=Path('benchmarks/results/dml_variants'))
    p.add_argument('--shared', type=Path, default=None, help='the shared data folder (default: shared_data_dir())')
    p.add_argument('--epochs', type=int, default=40)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS))
    p.add_argument('--jobs', type=int, default=1, help='units run at once (spawn processes)')
    p.add_argument('--threads', type=int, default=None, help='torch threads per unit (default: cores // jobs)')
    p.add_argument('--report-only', action='store_true', help='only write the tables of the units already finished')
    a = p.parse_args(argv)
    if a.report_only:   # tables from the units finished so far (e.g. while a run is still going)
        R, C = report(a.out, a.out/'work', a.variants, a.seeds)
        print(R.round(3).to_string(index=False)); print(C.round(3).to_string(index=False)); return
    from ecg_dml.core import shared_data_dir, versions
    shared = a.shared or shared_data_dir()
    if shared is None: p.error('no shared data folder: pass --shared or set ECG_DML_SHARED')
    bad = [v for v in a.variants if v not in VARIANTS]
    if bad: p.error(f'unknown variant(s) {bad}; known: {", ".join(VARIANTS)}')
    out = a.out; work = out/'work'; work.mkdir(parents=True, exist_ok=True)
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.jobs)
    t0 = time.time()
    store = open_store(work, Path(shared), n_workers=a.jobs)
    t_store = time.time() - t0
    units = [(v, s) for s in a.seeds for v in a.variants]
    units.sort(key=lambda u: (VARIANTS[u[0]] is None, u[0] in ('dml-paper',)))   # the long (view) units first
    done = []
    with ProcessPoolExecutor(a.jobs, mp_context=get_context('spawn')) as ex:
        futs = {ex.submit(run_unit, v, s, str(work), a.epochs, threads): (v, s) for v, s in units}
        for f in as_completed(futs):
            r = f.result(); done.append(r)
            print(f"{r['variant']:>22} seed {r['seed']}: {r['total_seconds']:.0f} s", flush=True)
    R, C = report(out, work, a.variants, a.seeds)
    run = dict(mode='dml-variants', command='python benchmarks/dml_variants.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
               epochs=a.epochs, seeds=a.seeds, bs=BS, lr=LR, encoder=ENCODER, jobs=a.jobs, threads=threads,
               n_store=len(store), store_seconds=round(t_store, 1), wall_seconds=round(time.time() - t0, 1),
               units=done, versions=versions(), machine=platform.platform(), cpus=os.cpu_count())
    (out/'run.json').write_text(json.dumps(run, indent=1, default=str))
    pd.set_option('display.width', 200)
    print(R.groupby('variant')[['auroc']].agg(['mean', 'min', 'max']).round(3))
    print(C.round(3).to_string(index=False))

if __name__ == '__main__': main()
