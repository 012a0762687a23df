"""Tables and plots of the results study (benchmarks/study.py): everything is computed from the stored evaluation
results, subgroup tables, test predictions and learning curves of its units."""
from __future__ import annotations
from pathlib import Path
import numpy as np, pandas as pd
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from ecg_dml.evaluate.metrics import paired_bootstrap
from ecg_dml.evaluate.protocols import plot_learning_curves
if __package__: from .benchtools import md_table   # imported as benchmarks.study_report
else: from benchtools import md_table               # imported by benchmarks/study.py run as a script

HEADLINE = {'superdiagnostic': ('auroc', 'macro'), 'norm_vs_abnormal': ('auroc', 'abnormal'), 'age': ('mae', 'age')}
TASK_TITLES = {'superdiagnostic': 'superdiagnostic, macro AUROC', 'norm_vs_abnormal': 'NORM vs abnormal, AUROC',
               'age': 'age, MAE (years)'}
BASELINE, HANDCRAFTED = 'random-init', 'handcrafted'
COMPARED_TO = {'linear': 'linear', 'frozen_mlp': 'frozen_mlp', 'finetune': 'scratch'}   # protocol -> baseline protocol
COLS = ['method', 'protocol', 'seed', 'fraction', 'task', 'target', 'metric', 'value', 'ci_low', 'ci_high', 'n',
        'n_train', 'status']
# the questions the study is for: (question, (method, protocol), (reference, protocol), fractions); superdiagnostic
QUESTIONS = [
    ('Does self-supervised DML beat an untrained encoder?', ('dml', 'linear'), (BASELINE, 'linear'), (1.0, 0.1)),
    ('Does DML beat SimCLR?', ('dml', 'linear'), ('simclr', 'linear'), (1.0, 0.1)),
    ('Does DML beat handcrafted ECG features?', ('dml', 'linear'), (HANDCRAFTED, 'linear'), (1.0, 0.1)),
    ('Does SimCLR beat handcrafted ECG features?', ('simclr', 'linear'), (HANDCRAFTED, 'linear'), (1.0, 0.1)),
    ('Does finetuning the DML encoder beat training from scratch?', ('dml', 'finetune'), (BASELINE, 'scratch'), (0.01, 0.1, 1.0)),
    ('Does finetuning the SimCLR encoder beat training from scratch?', ('simclr', 'finetune'), (BASELINE, 'scratch'), (0.01, 0.1, 1.0)),
    ("Does the DML paper's raw-signal mining learn anything?", ('dml-paper', 'linear'), (BASELINE, 'linear'), (1.0, 0.1)),
    ('With template positives, does InfoNCE beat the triplet loss?', ('dml', 'linear'), ('dml-template-triplet', 'linear'), (1.0, 0.1)),
]


def long_results(R:pd.DataFrame) -> pd.DataFrame:
    "The pooled rows (fold 0) in the study's long format; a fraction too small to train on appears as an undefined row"
    R = R[R.protocol != 'retrieval'].rename(columns={'encoder': 'method', 'n_test': 'n'})
    pooled, split = R[R.fold == 0], R[R.fold > 0]
    keys = ['method', 'protocol', 'seed', 'task', 'fraction']
    have = set(map(tuple, pooled[keys].drop_duplicates().to_numpy()))
    und = split[[tuple(r) not in have for r in split[keys].to_numpy()]].copy()
    und['target'] = und.task.map(lambda t: HEADLINE[t][1]); und['metric'] = und.task.map(lambda t: HEADLINE[t][0])
    return pd.concat([pooled, und], ignore_index=True).reindex(columns=COLS)

def headline(L:pd.DataFrame) -> pd.DataFrame:
    m = L.task.map(lambda t: HEADLINE[t][0]); tg = L.task.map(lambda t: HEADLINE[t][1])
    return L[(L.metric == m) & (L.target == tg)]

def gaps(S:pd.DataFrame) -> pd.DataFrame:
    "Per method/protocol/seed/task: female - male, and best - worst age band, of the headline metric (100 % labels)"
    cols = ['method', 'protocol', 'seed', 'task', 'fraction', 'gap', 'value', 'p_value', 'detail']
    if S.empty: return pd.DataFrame(columns=cols)
    rows = []
    S = S.rename(columns={'encoder': 'method'})
    for (m, p, s, t, f), g in S.groupby(['method', 'protocol', 'seed', 'task', 'fraction'], sort=False):
        g = g[g.metric == HEADLINE[t][0]]
        sx = g[g.attribute == 'sex'].set_index('group')
        if {'female', 'male'} <= set(sx.index):
            rows.append(dict(method=m, protocol=p, seed=s, task=t, fraction=f, gap='sex (female - male)',
                             value=sx.value['female'] - sx.value['male'], p_value=sx.p_value.get('female', np.nan),
                             detail=f"female {sx.value['female']:.3f} (n={sx.n['female']}), male {sx.value['male']:.3f} (n={sx.n['male']})"))
        ag = g[(g.attribute == 'age band') & g.value.notna()]
        if len(ag) >= 2:
            lower = HEADLINE[t][0] == 'mae'
            best, worst = ag.loc[ag.value.idxmin() if lower else ag.value.idxmax()], ag.loc[ag.value.idxmax() if lower else ag.value.idxmin()]
            rows.append(dict(method=m, protocol=p, seed=s, task=t, fraction=f, gap='age (best - worst band)',
                             value=best.value - worst.value, p_value=worst.get('p_value', np.nan),
                             detail=f'best {best.group} {best.value:.3f} (n={best.n}), worst {worst.group} {worst.value:.3f} (n={worst.n})'))
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------- paired comparisons
def _paired_row(g:pd.DataFrame, ref:pd.DataFrame, task:str, n_boot:int, seed:int) -> dict|None:
    "Paired bootstrap of one group's predictions `g` against the reference's on the same test ECGs"
    b = ref.set_index(['ecg_id', 'target']).pred
    C = len(dict.fromkeys(g.target))
    idx = pd.MultiIndex.from_arrays([g.ecg_id.to_numpy(), g.target.to_numpy()])
    if not idx.isin(b.index).all(): return None
    y = g.y.to_numpy().reshape(-1, C)
    s1, s2 = g.pred.to_numpy().reshape(-1, C), b.reindex(idx).to_numpy().reshape(-1, C)
    metric = HEADLINE[task][0]
    r = paired_bootstrap(y, s1, s2, metric, n_boot=n_boot, seed=seed)
    better = r['diff'] < 0 if metric == 'mae' else r['diff'] > 0
    sig = not (r['ci_low'] <= 0 <= r['ci_high'])
    return dict(metric=metric, value=r['value1'], baseline_value=r['value2'], diff=r['diff'], ci_low=r['ci_low'],
                ci_high=r['ci_high'], p_value=r['p_value'], n=len(y), better=bool(better), significant=bool(sig))

def paired_diffs(P:pd.DataFrame, pairs, n_boot:int, seed:int, tasks=None, fractions=None) -> pd.DataFrame:
    """Paired bootstrap difference of the headline metric between two (method, protocol)s on the same test ECGs, seed by
    seed (the reference's same seed, else its first), for every task and fraction both have. `pairs`:
    [((method, protocol), (reference method, reference protocol))]"""
    P = P.rename(columns={'encoder': 'method'})
    P = P[P.fold == 0] if 'fold' in P and (P.fold == 0).any() else P
    groups = {k: g for k, g in P.groupby(['method', 'protocol', 'task', 'fraction', 'seed'], sort=False)}
    rows = []
    for (m, p), (rm, rp) in pairs:
        for (m2, p2, t, f, s), g in groups.items():
            if (m2, p2) != (m, p) or (tasks and t not in tasks) or (fractions and not np.isclose(fractions, f).any()): continue
            ref_seeds = sorted(s2 for (a, b, c, d, s2) in groups if (a, b, c, d) == (rm, rp, t, f))
            if not ref_seeds: continue
            rs = s if s in ref_seeds else ref_seeds[0]
            r = _paired_row(g, groups[(rm, rp, t, f, rs)], t, n_boot, seed)
            if r: rows.append(dict(method=m, protocol=p, seed=s, reference=f'{rm} / {rp}', reference_seed=rs, task=t, fraction=f, **r))
    return pd.DataFrame(rows)

def _method_protocols(P:pd.DataFrame) -> list[tuple[str, str]]:
    P = P.rename(columns={'encoder': 'method'})
    return list(dict.fromkeys(zip(P.method, P.protocol)))

def vs_baseline(P:pd.DataFrame, n_boot:int, seed:int) -> pd.DataFrame:
    "Each method's headline metric minus the random-init baseline's (same protocol; finetune vs scratch), paired"
    pairs = [((m, p), (BASELINE, COMPARED_TO[p])) for m, p in _method_protocols(P) if m != BASELINE and p in COMPARED_TO]
    return paired_diffs(P, pairs, n_boot, seed)

def vs_real(P:pd.DataFrame, n_boot:int, seed:int) -> pd.DataFrame:
    "The pretraining-corpus axis: each `<method>+synN` minus the same method pretrained on the real ECGs only"
    pairs = [((m, p), (m.split('+syn')[0], p)) for m, p in _method_protocols(P) if '+syn' in m]
    return paired_diffs(P, pairs, n_boot, seed)

def verdict(d:pd.DataFrame) -> str:
    "Plain words for the paired differences of one question at one fraction (one row per seed)"
    if d.empty: return 'not measured (not run, or too few labels at this fraction)'
    n, sig_b, sig_w = len(d), int((d.significant & d.better).sum()), int((d.significant & ~d.better).sum())
    seeds = 'the seed' if n == 1 else f'all {n} seeds'
    if sig_b == n: return f'yes: better in {seeds} (paired 95 % CI above 0)'
    if sig_w == n: return f'no: worse in {seeds} (paired 95 % CI below 0)'
    if sig_b == sig_w == 0: return f'no detectable difference (the CI includes 0 in {seeds})'
    return f'mixed: better in {sig_b}, worse in {sig_w}, no detectable difference in {n - sig_b - sig_w} of {n} seeds'

def decisions(P:pd.DataFrame, n_boot:int, seed:int, task:str='superdiagnostic') -> tuple[pd.DataFrame, pd.DataFrame]:
    "(per-seed paired rows, one verdict per question and fraction) for `QUESTIONS`"
    rows, verdicts = [], []
    for q, a, b, fracs in QUESTIONS:
        d = paired_diffs(P, [(a, b)], n_boot, seed, tasks=[task], fractions=list(fracs))
        if len(d): rows.append(d.assign(question=q))
        for f in fracs:
            df = d[np.isclose(d.fraction, f)] if len(d) else d
            digits = 3
            verdicts.append(dict(question=q, compared=f'{a[0]} / {a[1]} vs {b[0]} / {b[1]}', fraction=f,
                                 diffs='; '.join(f'seed {r.seed}: {r["diff"]:+.{digits}f} [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}]'
                                                 for _, r in df.iterrows()) if len(df) else '',
                                 values='; '.join(f'{r.value:.3f} vs {r.baseline_value:.3f}' for _, r in df.iterrows()),
                                 verdict=verdict(df)))
    D = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return D, pd.DataFrame(verdicts)


# ---------------------------------------------------------------- markdown
def _fmt(v, lo, hi, digits=3):
    if not np.isfinite(v): return 'n/a'
    return f'{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]' if np.isfinite(lo) and np.isfinite(hi) else f'{v:.{digits}f}'

def headline_table(L:pd.DataFrame, task:str, methods) -> pd.DataFrame:
    h = headline(L)[lambda d: d.task == task]
    fractions = sorted(h.fraction.dropna().unique())
    digits = 1 if task == 'age' else 3
    rows = []
    for m in methods:
        for (p, s), g in h[h.method == m].groupby(['protocol', 'seed'], sort=False):
            r = {'method': m, 'protocol': p, 'seed': s}
            for f in fractions:
                q = g[np.isclose(g.fraction, f)]
                r[f'{f:.0%}'] = 'n/a' if q.empty else (_fmt(*q.iloc[0][['value', 'ci_low', 'ci_high']], digits)
                                                       if q.iloc[0].status == 'ok' else 'undefined')
            r['n test'] = int(g.n.max())
            rows.append(r)
    return pd.DataFrame(rows)

def md(df:pd.DataFrame) -> str: return md_table(df.reset_index(drop=True), floatfmt='.3f')


# ---------------------------------------------------------------- plots
def plot_curves(R:pd.DataFrame, task:str, methods, path:Path):
    "The headline metric against the label fraction, per method (seed 0 of each), linear and finetune/scratch"
    cols = [('linear probe', ['linear']), ('finetune (scratch for random-init)', ['finetune', 'scratch'])]
    cols = [(t, ps) for t, ps in cols if (R.protocol.isin(ps) & (R.task == task)).any()]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(5.8 * max(1, len(cols)), 4.6), squeeze=False, sharey=True)
    for ax, (title, ps) in zip(axes[0], cols):
        sub = R[R.protocol.isin(ps) & (R.task == task)]
        sub = sub[sub.seed == sub.groupby('encoder').seed.transform('min')]
        sub = sub.assign(_o=sub.encoder.map({m: i for i, m in enumerate(methods)})).sort_values('_o', kind='stable').drop(columns='_o')
        plot_learning_curves(sub, tasks=[task], axes=[ax])
        ax.set_title(title); ax.legend(fontsize=7, loc='best')
    fig.suptitle(f'{TASK_TITLES[task]} vs label fraction — test folds 9-10, 95 % bootstrap CI bands')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)

def plot_pretrain_curves(C:pd.DataFrame, path:Path):
    "The kNN probe (NORM vs abnormal, validation fold) and the positive purity against the optimizer step, per method"
    panels = [(c, t) for c, t in (('knn_auroc', 'kNN probe AUROC (validation fold)'), ('purity', 'positive purity'),
                                   ('valid_loss', 'validation loss')) if c in C and C[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 4), squeeze=False)
    for ax, (c, t) in zip(axes[0], panels):
        for (m, s), g in C.groupby(['method', 'seed'], sort=False):
            if g[c].notna().any(): ax.plot(g.step, g[c], 'o-' if s == C.seed.min() else 'x--', ms=3, label=f'{m} (seed {s})')
        if c == 'purity' and 'purity_chance' in C: ax.axhline(C.purity_chance.median(), color='grey', ls=':', lw=1, label='chance')
        ax.set(xlabel='optimizer step', title=t)
    if panels: axes[0][0].legend(fontsize=6)
    fig.suptitle('Pretraining curves: has each method levelled off at the study\'s step budget?')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)

def plot_fit_curves(F:pd.DataFrame, path:Path):
    "Validation loss and AUROC per epoch of finetuning / training from scratch, at each label fraction (best epoch marked)"
    F = F[F.task == 'superdiagnostic'] if len(F) and 'task' in F else F
    fr = sorted(F.fraction.unique()) if len(F) else []
    fig, axes = plt.subplots(2, max(1, len(fr)), figsize=(4.6 * max(1, len(fr)), 6.4), squeeze=False)
    for j, f in enumerate(fr):
        for (m, p, s), g in F[np.isclose(F.fraction, f)].groupby(['encoder', 'protocol', 'seed'], sort=False):
            for i, c in enumerate(('valid_loss', 'valid_auroc')):
                line, = axes[i, j].plot(g.epoch, g[c], '-', lw=1.2, label=f'{m} / {p} (seed {s})')
                b = g[g.best]
                axes[i, j].plot(b.epoch, b[c], 'o', color=line.get_color())
        axes[0, j].set_title(f'{f:.0%} of the training labels', fontsize=9)
        axes[1, j].set_xlabel('epoch')
    axes[0, 0].set_ylabel('validation loss'); axes[1, 0].set_ylabel('validation macro AUROC')
    if fr: axes[0, 0].legend(fontsize=6)
    fig.suptitle('Finetuning and training from scratch: validation curves (dot: the epoch kept by early stopping)')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)

def plot_vs_baseline(V:pd.DataFrame, tasks, path:Path, title:str|None=None, label:str='minus random-init'):
    V = V[V.seed == V.seed.min()] if len(V) else V
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 0.28 * max(1, V.groupby(['method', 'protocol']).ngroups if len(V) else 1) + 2.2),
                             squeeze=False)
    for ax, t in zip(axes[0], tasks):
        v = V[V.task == t] if len(V) else V
        if v.empty: ax.set_axis_off(); continue
        sign = -1 if HEADLINE[t][0] == 'mae' else 1   # colour: better than the baseline = blue
        piv = v.pivot_table(index=['method', 'protocol'], columns='fraction', values='diff', sort=False)
        sig = v.assign(s=v.significant.astype(float)).pivot_table(index=['method', 'protocol'], columns='fraction', values='s', sort=False)
        lim = np.nanmax(np.abs(piv.values)) or 1
        ax.imshow(sign * piv.values, cmap='RdBu', vmin=-lim, vmax=lim, aspect='auto')
        for (r, c), d in np.ndenumerate(piv.values):
            if np.isfinite(d): ax.text(c, r, f'{d:+.2f}' + ('*' if sig.values[r, c] > 0 else ''), ha='center', va='center', fontsize=6.5)
        ax.set_xticks(range(piv.shape[1]), [f'{f:.0%}' for f in piv.columns])
        ax.set_yticks(range(piv.shape[0]), [f'{m} / {p}' for m, p in piv.index], fontsize=7)
        ax.set_title(f'{t}: {HEADLINE[t][0]} {label}', fontsize=9)
    fig.suptitle(title or 'Difference to the random-init baseline (first seed; finetune vs scratch); * = paired 95 % CI excludes 0')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


# ---------------------------------------------------------------- all outputs
def timing_table(T:pd.DataFrame) -> pd.DataFrame:
    if T.empty: return T
    T = T.copy(); T['protocol'] = T.get('protocol', pd.Series(index=T.index, dtype=object)).fillna('')
    return (T.groupby(['stage', 'method', 'protocol'], sort=False).seconds.agg(['count', 'mean', 'sum']).round(1)
             .rename(columns={'count': 'units', 'mean': 'seconds per unit', 'sum': 'seconds total'}).reset_index())

def write_report(out:Path, results:pd.DataFrame, subgroups:pd.DataFrame, predictions:pd.DataFrame, fit_curves:pd.DataFrame,
                 pretrain_curves:pd.DataFrame, timings:pd.DataFrame, methods, n_boot:int, seed:int) -> list[Path]:
    "Write every CSV, markdown table and PNG plot of the study into `out`; returns the files"
    out = Path(out); (out/'tables').mkdir(parents=True, exist_ok=True); (out/'plots').mkdir(exist_ok=True)
    files = []
    def csv(df, name): df.to_csv(out/name, index=False); files.append(out/name)
    L = long_results(results)
    tasks = [t for t in HEADLINE if (L.task == t).any()]
    G = gaps(subgroups)
    V = vs_baseline(predictions, n_boot, seed)
    D, Q = decisions(predictions, n_boot, seed)
    S = vs_real(predictions, n_boot, seed)
    csv(L, 'results.csv'); csv(Q, 'decisions.csv'); csv(D, 'decisions_per_seed.csv'); csv(V, 'vs_baseline.csv')
    csv(subgroups.rename(columns={'encoder': 'method'}), 'subgroups.csv'); csv(G, 'gaps.csv')
    csv(pretrain_curves, 'pretrain_curves.csv'); csv(fit_curves, 'fit_curves.csv'); csv(timings, 'timings.csv')
    if len(S): csv(S, 'vs_real.csv')
    sections = [('The questions: paired differences on the same test ECGs (superdiagnostic macro AUROC), per seed', Q)]
    for t in tasks:
        tab = headline_table(L, t, methods)
        (out/'tables'/f'{t}.md').write_text(md(tab) + '\n'); files.append(out/'tables'/f'{t}.md')
        sections.append((f'{TASK_TITLES[t]} [95 % CI], by label fraction', tab))
    rnd = lambda df: df.round(3) if len(df) else df
    extra = [('decisions', Q, None), ('vs_baseline', rnd(V.drop(columns=['better', 'significant'], errors='ignore')),
              'Paired difference to the random-init baseline (finetune: to scratch)'),
             ('subgroup_gaps', rnd(G), 'Subgroup gaps at 100 % labels (permutation p-value of the worse group vs the rest)'),
             ('timings', timing_table(timings), 'Wall time per unit (seconds)')]
    if len(S): extra.append(('vs_real', rnd(S), 'Real + synthetic pretraining minus the same method on real ECGs only (paired)'))
    for name, df, title in extra:
        (out/'tables'/f'{name}.md').write_text(md(df) + '\n'); files.append(out/'tables'/f'{name}.md')
        if title: sections.append((title, df))
    for t in tasks:
        plot_curves(results, t, methods, out/'plots'/f'curves_{t}.png'); files.append(out/'plots'/f'curves_{t}.png')
    plot_pretrain_curves(pretrain_curves, out/'plots'/'pretrain_curves.png'); files.append(out/'plots'/'pretrain_curves.png')
    plot_fit_curves(fit_curves, out/'plots'/'fit_curves.png'); files.append(out/'plots'/'fit_curves.png')
    plot_vs_baseline(V, tasks, out/'plots'/'vs_baseline.png'); files.append(out/'plots'/'vs_baseline.png')
    if len(S):
        plot_vs_baseline(S, tasks, out/'plots'/'vs_real.png', title='Real + synthetic pretraining minus real only '
                         '(same method and protocol); * = paired 95 % CI excludes 0', label='minus real only')
        files.append(out/'plots'/'vs_real.png')
    text = '# Study results\n\n' + '\n\n'.join(f'## {title}\n\n{md(df)}' for title, df in sections)
    text += '\n\n' + '\n'.join(f'![{p.stem}](plots/{p.name})' for p in files if p.suffix == '.png') + '\n'
    (out/'report.md').write_text(text); files.append(out/'report.md')
    return files
