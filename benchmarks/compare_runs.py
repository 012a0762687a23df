"""Paired comparison of two runs of the results study (benchmarks/study.py) that differ in what was trained, not in
what was tested -- e.g. the pretraining budget (`--steps 600` vs `--steps 1800`): for every (method, protocol, seed,
task, label fraction) both runs evaluated, run B's headline metric minus run A's on the same test ECGs, with a paired
bootstrap CI. It reads the runs' work folders (each unit's stored test predictions), so it works on runs made with
any settings, and refuses runs whose test sets or metrics differ (different data, length, folds or bootstrap).

  python benchmarks/compare_runs.py RUN_A RUN_B                  # writes RUN_B/vs_<A's differing setting>.csv
  python benchmarks/compare_runs.py RUN_A RUN_B --methods dml --out diffs.csv
"""
from __future__ import annotations
import argparse, json
from pathlib import Path
import pandas as pd

from ecg_dml.evaluate.protocols import load_results
if __package__:
    from .study_report import paired_diffs, BASELINE, HANDCRAFTED   # imported as benchmarks.compare_runs
    from .benchtools import md_table
else:
    from study_report import paired_diffs, BASELINE, HANDCRAFTED    # run as a file
    from benchtools import md_table

# settings that define the test set and how it is scored: two runs that differ in one of them cannot be paired
TEST_SETTINGS = ('data', 'seconds', 'test_folds', 'valid_fold', 'n_boot', 'probe_cs')


def run_settings(run) -> dict:
    "The settings a study run was made with (its work/settings.json)"
    f = Path(run)/'work'/'settings.json'
    if not f.exists(): raise SystemExit(f'{run}: not a study run (no {f.relative_to(run)}; pass the --out folder of benchmarks/study.py)')
    return json.loads(f.read_text())

def differing(sa:dict, sb:dict) -> dict:
    """{setting: (A's value, B's value)} for the settings the runs differ in; refuses (SystemExit naming the
    setting) when one of them changes the test set or its scoring"""
    diff = {k: (sa.get(k), sb.get(k)) for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)}
    bad = {k: v for k, v in diff.items() if k in TEST_SETTINGS}
    if bad: raise SystemExit(f'the runs were not tested alike, a paired comparison would be meaningless: {bad}')
    return diff

def run_predictions(run) -> pd.DataFrame:
    "Every finished evaluation unit's test predictions of one study run, in one table"
    units = sorted(p for p in (Path(run)/'work'/'eval').glob('*/seed*/*') if (p/'done.json').exists())
    parts = [load_results(u).predictions for u in units]
    parts = [p for p in parts if len(p)]
    if not parts: raise SystemExit(f'{run}: no finished evaluation units under work/eval')
    return pd.concat(parts, ignore_index=True)

def compare_runs(a, b, methods=None, n_boot:int|None=None, seed:int=0) -> pd.DataFrame:
    """Run `b` minus run `a`, paired on the same test ECGs, for every (method, protocol, seed, task, fraction) both
    evaluated. `methods`: the pretrained methods to compare (default: all but the baselines, which do not depend on
    the pretraining). Columns as the study's vs_baseline.csv plus `a`/`b` (what differs, e.g. 'steps 600')."""
    sa, sb = run_settings(a), run_settings(b)
    diff = differing(sa, sb)
    label = lambda i: ', '.join(f'{k} {v[i]}' for k, v in diff.items()) or 'same settings'
    Pa, Pb = run_predictions(a), run_predictions(b)
    methods = methods or [m for m in dict.fromkeys(Pb.encoder) if m not in (BASELINE, HANDCRAFTED)]
    both = set(zip(Pa.encoder, Pa.protocol)) & set(zip(Pb.encoder, Pb.protocol))
    pairs = [((f'{m}@b', p), (m, p)) for m, p in dict.fromkeys(zip(Pb.encoder, Pb.protocol)) if m in methods and (m, p) in both]
    if not pairs: raise SystemExit(f'no (method, protocol) of {methods} was evaluated in both runs')
    P = pd.concat([Pa[Pa.encoder.isin(methods)], Pb[Pb.encoder.isin(methods)].assign(encoder=lambda d: d.encoder + '@b')],
                  ignore_index=True)
    D = paired_diffs(P, pairs, n_boot or sa.get('n_boot') or 1000, seed)
    D = D[D.reference_seed == D.seed]   # seed against the same seed only
    return (D.assign(method=D.method.str.removesuffix('@b'), a=label(0), b=label(1))
             .drop(columns=['reference', 'reference_seed']).reset_index(drop=True))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_a', type=Path, help='the reference run (its --out folder)')
    p.add_argument('run_b', type=Path, help='the run compared with it')
    p.add_argument('--methods', help='comma-separated methods [every pretrained method both runs evaluated]')
    p.add_argument('--out', type=Path, help="CSV to write [RUN_B/vs_<A's differing settings>.csv]")
    p.add_argument('--n-boot', type=int, help="bootstrap resamples [the runs' own]")
    a = p.parse_args(argv)
    D = compare_runs(a.run_a, a.run_b, a.methods.split(',') if a.methods else None, a.n_boot)
    out = a.out or a.run_b/('vs_' + D.a.iloc[0].replace(', ', '_').replace(' ', '_') + '.csv')
    D.to_csv(out, index=False)
    show = D.assign(ci=D.ci_low.map('{:+.3f}'.format) + ', ' + D.ci_high.map('{:+.3f}'.format))
    print(f'{D.b.iloc[0]} minus {D.a.iloc[0]}, paired on the same test ECGs ({len(D)} rows -> {out}):')
    print(md_table(show[['method', 'protocol', 'task', 'fraction', 'seed', 'baseline_value', 'value', 'diff', 'ci', 'significant']]
                   .rename(columns={'baseline_value': 'A', 'value': 'B'}), floatfmt='.3f'))
    return D

if __name__ == '__main__': main()
