"""Does reading from an ECG store stay fast, and does process memory stay flat, as the store grows?

Builds one synthetic store of `--n` ECGs (default 200,000; 12 leads x 1000 samples at 100 Hz, int16) in one pass,
then, for growing prefixes of it (opened as stores of their own by truncating records.csv's view), measures random
batch reads (ECGs/s) and the reading process's private memory (RssAnon) and file-backed mapped memory (RssFile).
The synthetic ECGs are band-limited noise; their content does not matter for speed.

Usage: python benchmarks/store_scaling.py [--n 200000] [--dest /tmp/ecg_store_scaling] [--keep]
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

def read_speed(store, n_rows, bs=256, n_batches=200, seed=0):
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for _ in range(n_batches): store.get_batch(rng.integers(0, n_rows, bs))
    batch = n_batches * bs / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in rng.integers(0, n_rows, 20000): store[int(i)]
    item = 20000 / (time.perf_counter() - t)
    return batch, item

def main(n=200_000, dest='/tmp/ecg_store_scaling', keep=False, workers=2):
    dest = Path(dest)
    src = pd.DataFrame({'ecg_id': np.arange(n), 'patient_id': np.arange(n) // 3})
    t = time.time()
    build_store(src, dest, reader=SyntheticReader(), shard_size=4096, n_workers=workers, progress=False)
    build_s = time.time() - t
    size_gb = sum(f.stat().st_size for f in (dest/'shards').glob('*.npy')) / 1e9
    print(f'built {n} ECGs in {build_s:.0f} s ({n / build_s:.0f} ECG/s with {workers} workers), {size_gb:.2f} GB')
    print(f'{"ECGs in store":>14} {"batch-256 ECG/s":>16} {"item ECG/s":>11} {"RssAnon MB":>11} {"RssFile MB":>11}')
    for m in [n // 8, n // 4, n // 2, n]:
        gc.collect()
        st = ECGStore(dest)
        batch, item = read_speed(st, m)
        anon, fileb = rss()
        print(f'{m:>14} {batch:>16.0f} {item:>11.0f} {anon:>11.0f} {fileb:>11.0f}')
        del st
    if not keep: shutil.rmtree(dest)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=200_000); p.add_argument('--dest', default='/tmp/ecg_store_scaling')
    p.add_argument('--keep', action='store_true'); p.add_argument('--workers', type=int, default=2)
    a = p.parse_args()
    main(a.n, a.dest, a.keep, a.workers)
