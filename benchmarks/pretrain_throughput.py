"""How fast does pretraining run, and how much of a step is spent outside the encoder?

For each method, trains one epoch of `pretrain()` (steps after the first two of the epoch are timed by
`ecg_dml.learner.StepTimer`) and prints ECGs/s and the split of a step: data, views, forward, loss (mining + loss),
backward, optimizer. `outside` = data + views + loss, the part that is not the encoder's own work.

Usage: python benchmarks/pretrain_throughput.py [--data PTBXL_ROOT] [--encoder resnet1d18] [--bs 64]
                                                [--methods dml simclr ...] [--threads N]
Defaults: resnet1d18 (the wider encoder, where the encoder's share of a step is largest), batch 64, DML, on ../shared/data/ptbxl if present, else the
bundled sample. The figures measured are recorded in nbs/41_pretrain.ipynb.
"""
import argparse, tempfile, time
from pathlib import Path
import pandas as pd, torch
from ecg_dml.core import sample_dir, shared_data_dir
from ecg_dml.learner import StepTimer
from ecg_dml.pretrain import pretrain
from ecg_dml.methods import get_method

def measure(data, method, encoder, bs, out, epochs=1):
    learn = pretrain(data, method=method, encoder=encoder, bs=bs, epochs=epochs, out=out/method, progress=False,
                     probe=False, fit=False, target='age' if get_method(method).needs_labels else None)
    timer = StepTimer(skip=2)
    learn.add_cb(timer)
    t = time.time(); learn.fit(epochs, 1e-3); wall = time.time() - t
    s = timer.summary()
    row = {'method': method, 'ECG/s': s.attrs['ecgs_per_s'], 'outside encoder': s.attrs['outside_encoder'],
           **{k: s.loc[k, 'share'] for k in ('data', 'views', 'forward', 'loss', 'backward', 'optimizer')},
           'ms/step': 1000 * s.loc['step', 'seconds/step'], 'steps timed': s.attrs['steps'], 'epoch s': wall}
    return row

def main(data=None, encoder='resnet1d18', bs=64, methods=('dml',), threads=None):
    if threads: torch.set_num_threads(threads)
    data = data or (shared_data_dir()/'ptbxl' if shared_data_dir() else sample_dir())
    out = Path(tempfile.mkdtemp())
    rows = [measure(data, m, encoder, bs, out) for m in methods]
    df = pd.DataFrame(rows).set_index('method')
    print(f'{encoder}, batch {bs}, {torch.get_num_threads()} threads, data {data}')
    print(df.to_string(float_format=lambda v: f'{v:.3f}'))
    return df

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data'); p.add_argument('--encoder', default='resnet1d18'); p.add_argument('--bs', type=int, default=64)
    p.add_argument('--methods', nargs='+', default=['dml']); p.add_argument('--threads', type=int)
    a = p.parse_args()
    main(a.data, a.encoder, a.bs, a.methods, a.threads)
