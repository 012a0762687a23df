"""Build the bundled PTB-XL sample (ecg_dml/sample_data/ptbxl) from ../shared/data/ptbxl.

Deterministic: the same source gives the same selection. The sample is a real subset of PTB-XL v1.0.3
(CC BY 4.0), copied byte for byte (WFDB .hea/.dat, the matching rows of ptbxl_database.csv, scp_statements.csv).

Selection (about 250 records at 100 Hz, plus a few at 500 Hz):
- every record of a handful of patients with several ECGs (so patient-aware code has real positives),
- then, round-robin over (strat_fold, superdiagnostic class), records drawn with a fixed seed, so all ten folds
  and all five superdiagnostic classes are covered, rare classes (HYP) included.

Drawn from ecg_id <= 999 only (`--max-id`): the shared subset held just those records when the bundle was made, and
the selection depends on every candidate, so the grown subset (ids up to 1999) would give another sample.

Usage: python scripts/make_sample.py [--src ../shared/data/ptbxl] [--n 250] [--n500 10] [--max-id 999]
"""
import argparse, ast, shutil
from pathlib import Path
import numpy as np, pandas as pd

SUPER = ['NORM', 'MI', 'STTC', 'CD', 'HYP']

def superclasses(scp_codes, stmts):
    "Superdiagnostic classes of one record (diagnostic statements with likelihood > 0 count, as in PTB-XL's example)"
    codes = ast.literal_eval(scp_codes)
    return sorted({stmts.loc[c, 'diagnostic_class'] for c in codes if c in stmts.index})

def select(db, stmts, n=250, n_multi_patients=12, seed=0):
    rng = np.random.default_rng(seed)
    db = db.assign(sup=[superclasses(s, stmts) for s in db.scp_codes])
    counts = db.patient_id.value_counts()
    multi = counts[counts > 1].index.to_numpy()
    chosen_pat = rng.choice(np.sort(multi), size=min(n_multi_patients, len(multi)), replace=False)
    chosen = set(db.index[db.patient_id.isin(chosen_pat)])
    # round-robin over (fold, class) cells until n records
    cells = {(f, c): list(rng.permutation(db.index[(db.strat_fold == f) & db.sup.apply(lambda s: c in s)]))
             for f in range(1, 11) for c in SUPER}
    while len(chosen) < n and any(cells.values()):
        for key in sorted(cells):
            while cells[key] and cells[key][-1] in chosen: cells[key].pop()
            if cells[key] and len(chosen) < n: chosen.add(cells[key].pop())
    return db.loc[sorted(chosen)].drop(columns='sup')

def main(src='../shared/data/ptbxl', dest='ecg_dml/sample_data/ptbxl', n=250, n500=10, seed=0, max_id=999):
    src, dest = Path(src), Path(dest)
    db = pd.read_csv(src/'ptbxl_database.csv', index_col='ecg_id')
    if max_id is not None: db = db[db.index <= max_id]          # the candidates the bundle was drawn from
    stmts = pd.read_csv(src/'scp_statements.csv', index_col=0)
    stmts = stmts[stmts.diagnostic == 1]
    sub = select(db, stmts, n=n, seed=seed)
    hr_ids = [i for i in sub.index if (src/f"{db.loc[i, 'filename_hr']}.dat").exists()][:n500]
    if dest.exists(): shutil.rmtree(dest)
    for i in sub.index:
        files = [db.loc[i, 'filename_lr']] + ([db.loc[i, 'filename_hr']] if i in hr_ids else [])
        for f in files:
            for ext in ('.hea', '.dat'):
                (dest/f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src/f'{f}{ext}', dest/f'{f}{ext}')
    # keep the CSV rows byte for byte (same header, same quoting)
    lines = (src/'ptbxl_database.csv').read_text(encoding='utf-8').splitlines(keepends=True)
    keep = {str(i) for i in sub.index}
    rows = [lines[0]] + [l for l in lines[1:] if l.split(',', 1)[0] in keep]
    assert len(rows) == len(sub) + 1, 'CSV rows and selection disagree'
    (dest/'ptbxl_database.csv').write_text(''.join(rows), encoding='utf-8')
    shutil.copyfile(src/'scp_statements.csv', dest/'scp_statements.csv')
    shutil.copyfile(src/'LICENSE.txt', dest/'LICENSE.txt')
    (dest/'RECORDS').write_text(''.join(f"{db.loc[i, 'filename_lr']}\n" for i in sub.index), encoding='utf-8')
    print(f'{len(sub)} records at 100 Hz, {len(hr_ids)} at 500 Hz, {sub.patient_id.nunique()} patients -> {dest}')
    return sub

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--src', default='../shared/data/ptbxl'); p.add_argument('--dest', default='ecg_dml/sample_data/ptbxl')
    p.add_argument('--n', type=int, default=250); p.add_argument('--n500', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-id', type=int, default=999, help='largest ecg_id to draw from (the bundle: 999)')
    a = p.parse_args()
    main(a.src, a.dest, a.n, a.n500, a.seed, a.max_id)
