"""Does reading from an ECG store stay fast, and does process memory stay flat, as the store grows?

Builds one synthetic store of `--n` ECGs (default 200,000; 12 leads x 1000 samples at 100 Hz, int16) in one pass,
then, for growing prefixes of it, reads two epochs (random permutations in batches of 256, as the DataLoaders do)
and random single ECGs, and reports ECGs/s and the reading process's private memory (RssAnon) and file-backed mapped
memory (RssFile). `--reuse` measures an existing store at `--dest` without building it.
The synthetic ECGs are band-limited noise; their content does not matter for speed.

Usage: python benchmarks/store_scaling.py [--n 200000] [--dest /tmp/ecg_store_scaling] [--keep] [--reuse]
Prints a table; the figures measured are recorded in nbs/04_data.store.ipynb.
"""
import argparse, gc, os, shutil, time
from pathlib import Path
import numpy as np, pandas as pd
from ecg_dml.data.store import build_store, ECGStore

class SyntheticReader:
    "A picklable reader: a deterministic pseudo-ECG per row (seeded by the row id)"
    def __init__(self, fs=100, seconds=10, leads=12): self.shape, self.fs = (leads, int(fs * seconds)), fs
    def __call__(self, row):
        rng = np.random.default_rng(int(row['ecg_id']))
        x = rng.standard_normal(self.shape).astype(np.float32).cumsum(-1) * 0.02
        return x - x.mean(-1, keepdims=True), self.fs

def rss():
    "(private, file-backed) resident memory of this process, MB"
    d = dict(l.split(':', 1) for l in Path('/proc/self/status').read_text().splitlines() if ':' in l)
    return int(d['RssAnon'].split()[0]) / 1024, int(d['RssFile'].split()[0]) / 1024

def epoch_speed(store, n_rows, bs=256, seed=0):
    "ECGs/s of one epoch over the first `n_rows` ECGs: a random permutation read in batches, as the DataLoaders do"
    perm = np.random.default_rng(seed).permutation(n_rows)
    t = time.perf_counter()
    for i in range(0, n_rows, bs): store.get_batch(perm[i:i + bs])
    return n_rows / (time.perf_counter() - t)

def item_speed(store, n_rows, n=20000, seed=0):
    t = time.perf_counter()
    for i in np.random.default_rng(seed).integers(0, n_rows, n): store[int(i)]
    return n / (time.perf_counter() - t)

def main(n=200_000, dest='/tmp/ecg_store_scaling', keep=False, workers=2, reuse=False):
    dest = Path(dest)
    src = pd.DataFrame({'ecg_id': np.arange(n), 'patient_id': np.arange(n) // 3})
    t = time.time()
    if not reuse: build_store(src, dest, reader=SyntheticReader(), shard_size=4096, n_workers=workers, progress=False)
    build_s = time.time() - t
    n = len(ECGStore(dest)) if reuse else n
    size_gb = sum(f.stat().st_size for f in (dest/'shards').glob('*.npy')) / 1e9
    if not reuse: print(f'built {n} ECGs in {build_s:.0f} s ({n / build_s:.0f} ECG/s with {workers} workers), {size_gb:.2f} GB')
    print('epoch 1: the first pass of a fresh process (every page touched for the first time: page faults);')
    print('epoch 2: the next pass (pages mapped; what every later epoch sees while the store fits in the page cache)')
    print(f'{"ECGs in store":>14} {"epoch 1 ECG/s":>14} {"epoch 2 ECG/s":>14} {"store[i] ECG/s":>15} {"RssAnon MB":>11} {"RssFile MB":>11}')
    for m in [n // 8, n // 4, n // 2, n]:
        gc.collect()
        st = ECGStore(dest)
        e1, e2 = epoch_speed(st, m, seed=1), epoch_speed(st, m, seed=2)
        item = item_speed(st, m)
        anon, fileb = rss()
        print(f'{m:>14} {e1:>14.0f} {e2:>14.0f} {item:>15.0f} {anon:>11.0f} {fileb:>11.0f}')
        del st
    if not keep: shutil.rmtree(dest)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=200_000); p.add_argument('--dest', default='/tmp/ecg_store_scaling')
    p.add_argument('--keep', action='store_true'); p.add_argument('--reuse', action='store_true')
    p.add_argument('--workers', type=int, default=2)
    a = p.parse_args()
    main(a.n, a.dest, a.keep or a.reuse, a.workers, a.reuse)
