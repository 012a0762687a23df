"""Tables and plots of the results study (benchmarks/study.py): everything is computed from the pooled evaluation
results, subgroup tables and out-of-fold predictions that `ecg_dml.evaluate.protocols.merge_results` returns."""
from __future__ import annotations
from pathlib import Path
import numpy as np, pandas as pd
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from ecg_dml.evaluate.metrics import paired_bootstrap
from ecg_dml.evaluate.protocols import plot_learning_curves

HEADLINE = {'superdiagnostic': ('auroc', 'macro'), 'norm_vs_abnormal': ('auroc', 'abnormal'), 'age': ('mae', 'age')}
TASK_TITLES = {'superdiagnostic': 'superdiagnostic, macro AUROC', 'norm_vs_abnormal': 'NORM vs abnormal, AUROC',
               'age': 'age, MAE (years)'}
COMPARED_TO = {'linear': 'linear', 'frozen_mlp': 'frozen_mlp', 'finetune': 'scratch'}   # protocol -> baseline protocol
COLS = ['method', 'protocol', 'fraction', 'task', 'target', 'metric', 'value', 'ci_low', 'ci_high', 'n', 'n_train',
        'status']


def long_results(R:pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    "(pooled rows, per-fold rows) in the study's long format; fractions no fold could run appear as undefined rows"
    R = R[R.protocol != 'retrieval'].rename(columns={'encoder': 'method', 'n_test': 'n'})
    pooled, per = R[R.fold == 0], R[R.fold > 0]
    keys = ['method', 'protocol', 'task', 'fraction']
    have = set(map(tuple, pooled[keys].drop_duplicates().to_numpy()))
    missing = per[[tuple(r) not in have for r in per[keys].to_numpy()]]
    und = missing.groupby(keys, sort=False).agg(n=('n', 'sum'), n_train=('n_train', 'mean'), status=('status', 'first')).reset_index()
    und['target'] = und.task.map(lambda t: HEADLINE[t][1]); und['metric'] = und.task.map(lambda t: HEADLINE[t][0])
    return pd.concat([pooled, und], ignore_index=True).reindex(columns=COLS), per.reindex(columns=COLS + ['fold'])


def headline(L:pd.DataFrame) -> pd.DataFrame:
    m = L.task.map(lambda t: HEADLINE[t][0]); tg = L.task.map(lambda t: HEADLINE[t][1])
    return L[(L.metric == m) & (L.target == tg)]


def gaps(S:pd.DataFrame) -> pd.DataFrame:
    "Per method/protocol/task: female - male, and best - worst age band, of the headline metric (pooled, 100 % labels)"
    rows = []
    if S.empty: return pd.DataFrame(columns=['method', 'protocol', 'task', 'fraction', 'gap', 'value', 'p_value', 'detail'])
    S = S.rename(columns={'encoder': 'method'})
    for (m, p, t, f), g in S.groupby(['method', 'protocol', 'task', 'fraction'], sort=False):
        g = g[g.metric == HEADLINE[t][0]]
        sx = g[g.attribute == 'sex'].set_index('group')
        if {'female', 'male'} <= set(sx.index):
            rows.append(dict(method=m, protocol=p, task=t, fraction=f, gap='sex (female - male)',
                             value=sx.value['female'] - sx.value['male'], p_value=sx.p_value.get('female', np.nan),
                             detail=f"female {sx.value['female']:.3f} (n={sx.n['female']}), male {sx.value['male']:.3f} (n={sx.n['male']})"))
        ag = g[(g.attribute == 'age band') & g.value.notna()]
        if len(ag) >= 2:
            best = ag.loc[ag.value.idxmin() if HEADLINE[t][0] == 'mae' else ag.value.idxmax()]
            worst = ag.loc[ag.value.idxmax() if HEADLINE[t][0] == 'mae' else ag.value.idxmin()]
            rows.append(dict(method=m, protocol=p, task=t, fraction=f, gap='age (best - worst band)',
                             value=best.value - worst.value, p_value=worst.get('p_value', np.nan),
                             detail=f'best {best.group} {best.value:.3f} (n={best.n}), worst {worst.group} {worst.value:.3f} (n={worst.n})'))
    return pd.DataFrame(rows)


def _paired_row(g:pd.DataFrame, ref:pd.DataFrame, task:str, n_boot:int, seed:int) -> dict|None:
    "Paired bootstrap of one (method, protocol, task, fraction)'s predictions `g` against the reference's on the same ECGs"
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
                ci_high=r['ci_high'], p_value=r['p_value'], n=len(y),
                verdict=('better' if better else 'worse') + (' (CI excludes 0)' if sig else ' (CI includes 0)'))

def paired_diffs(P:pd.DataFrame, pairs, n_boot:int, seed:int) -> pd.DataFrame:
    """Paired bootstrap difference of the headline metric between two (method, protocol)s on the same test ECGs, for
    every task and fraction both have. `pairs`: [((method, protocol), (reference method, reference protocol))]"""
    P = P.rename(columns={'encoder': 'method'})
    groups = {k: g for k, g in P.groupby(['method', 'protocol', 'task', 'fraction'], sort=False)}
    by_mp = {}   # (method, protocol) -> [(task, fraction)], so each pair looks only at its own groups
    for m, p, t, f in groups: by_mp.setdefault((m, p), []).append((t, f))
    rows = []
    for (m, p), (rm, rp) in pairs:
        for t, f in by_mp.get((m, p), []):
            if (rm, rp, t, f) not in groups: continue
            r = _paired_row(groups[(m, p, t, f)], groups[(rm, rp, t, f)], t, n_boot, seed)
            if r: rows.append(dict(method=m, protocol=p, baseline=f'{rm} / {rp}', task=t, fraction=f, **r))
    return pd.DataFrame(rows)

def _method_protocols(P:pd.DataFrame) -> list[tuple[str, str]]:
    P = P.rename(columns={'encoder': 'method'})
    return list(dict.fromkeys(zip(P.method, P.protocol)))

def vs_baseline(P:pd.DataFrame, baseline:str, n_boot:int, seed:int) -> pd.DataFrame:
    "Paired bootstrap difference of each method's headline metric to the random-init baseline on the same test ECGs"
    pairs = [((m, p), (baseline, COMPARED_TO[p])) for m, p in _method_protocols(P) if m != baseline and p in COMPARED_TO]
    return paired_diffs(P, pairs, n_boot, seed)

# the head-to-head questions the study is for: mining distance, DML vs the contrastive baseline, local vs global positives
HEAD_TO_HEAD = [('dml-correlation', 'dml-euclidean'), ('dml-knn-correlation', 'dml-knn-euclidean'),
                ('dml-dtw', 'dml-euclidean'), ('dml-knn-euclidean', 'dml-euclidean'), ('dml-knn-correlation', 'dml-correlation'),
                ('dml-euclidean', 'simclr'), ('dml-correlation', 'simclr'), ('dml-dtw', 'simclr'), ('simclr', '3kg'),
                ('clocs-cmsc', 'simclr'), ('pclr', 'simclr')]

def head_to_head(P:pd.DataFrame, n_boot:int, seed:int) -> pd.DataFrame:
    "Paired differences for `HEAD_TO_HEAD` (first minus second, same protocol), where both methods ran"
    mp = set(_method_protocols(P))
    pairs = [((a, p), (b, p)) for a, b in HEAD_TO_HEAD for p in ('linear', 'frozen_mlp', 'finetune') if (a, p) in mp and (b, p) in mp]
    return paired_diffs(P, pairs, n_boot, seed)

def vs_real(P:pd.DataFrame, n_boot:int, seed:int) -> pd.DataFrame:
    "The pretraining-corpus axis: each `<method>+synN` minus the same method pretrained on the real ECGs only"
    pairs = [((m, p), (m.split('+syn')[0], p)) for m, p in _method_protocols(P) if '+syn' in m]
    return paired_diffs(P, pairs, n_boot, seed)


# ---------------------------------------------------------------- markdown
def _fmt(v, lo, hi, digits=3):
    if not np.isfinite(v): return 'n/a'
    return f'{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]' if np.isfinite(lo) and np.isfinite(hi) else f'{v:.{digits}f}'

def headline_table(L:pd.DataFrame, task:str, methods, fractions) -> pd.DataFrame:
    h = headline(L)[lambda d: d.task == task]
    digits = 1 if task == 'age' else 3
    rows = []
    for m in methods:
        for p in dict.fromkeys(h[h.method == m].protocol):
            r = {'method': m, 'protocol': p}
            for f in fractions:
                q = h[(h.method == m) & (h.protocol == p) & np.isclose(h.fraction, f)]
                r[f'{f:.0%}'] = 'n/a' if q.empty else (_fmt(*q.iloc[0][['value', 'ci_low', 'ci_high']], digits)
                                                       if q.iloc[0].status == 'ok' else 'undefined')
            r['n test'] = int(h[(h.method == m) & (h.protocol == p)].n.max())
            rows.append(r)
    return pd.DataFrame(rows)

def md(df:pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt='.3f') if len(df) else '_(no rows)_'


# ---------------------------------------------------------------- plots
def plot_curves(R:pd.DataFrame, task:str, methods, path:Path):
    cols = [('linear', ['linear']), ('frozen encoder + MLP', ['frozen_mlp']), ('finetune (scratch for random-init)', ['finetune', 'scratch'])]
    cols = [(t, ps) for t, ps in cols if R.protocol.isin(ps).any()]
    fig, axes = plt.subplots(1, len(cols), figsize=(5.6 * len(cols), 4.6), squeeze=False, sharey=True)
    colors = plt.cm.tab20(np.linspace(0, 1, 20))[:max(1, len(methods))]
    for ax, (title, ps) in zip(axes[0], cols):
        ax.set_prop_cycle(color=colors)
        sub = R[R.protocol.isin(ps) & (R.task == task)]
        sub = sub.assign(_o=sub.encoder.map({m: i for i, m in enumerate(methods)})).sort_values('_o', kind='stable').drop(columns='_o')
        plot_learning_curves(sub, tasks=[task], axes=[ax])
        ax.set_title(title); ax.legend(fontsize=6.5, ncol=1, loc='best')
    fig.suptitle(f'{TASK_TITLES[task]} vs label fraction — pooled out-of-fold predictions, 95 % bootstrap CI bands')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)

def plot_gaps(G:pd.DataFrame, tasks, methods, path:Path):
    kinds = ['sex (female - male)', 'age (best - worst band)']
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 0.32 * len(methods) * len(tasks) + 1.5 * len(tasks)), squeeze=False)
    marks = {'linear': 'o', 'frozen_mlp': 's', 'finetune': '^', 'scratch': 'v'}
    for i, t in enumerate(tasks):
        for j, k in enumerate(kinds):
            ax = axes[i, j]; g = G[(G.task == t) & (G.gap == k)] if len(G) else G
            for p, mk in marks.items():
                q = g[g.protocol == p] if len(g) else g
                if len(q): ax.scatter(q.value, [methods.index(m) for m in q.method], marker=mk, label=p, alpha=0.8)
            ax.axvline(0, color='grey', lw=0.8, ls=':')
            ax.set_yticks(range(len(methods)), methods, fontsize=7)
            ax.set_title(f'{t}: {k} ({HEADLINE[t][0].upper()})', fontsize=9)
            if len(g): ax.legend(fontsize=7)
    fig.suptitle('Subgroup gaps at 100 % labels (pooled out-of-fold predictions)')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)

def plot_vs_baseline(V:pd.DataFrame, tasks, path:Path, title:str|None=None, label:str='minus random-init'):
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 0.28 * max(1, V.groupby(['method', 'protocol']).ngroups) + 2.2),
                             squeeze=False)
    for ax, t in zip(axes[0], tasks):
        v = V[V.task == t] if len(V) else V
        if v.empty: ax.set_axis_off(); continue
        sign = -1 if HEADLINE[t][0] == 'mae' else 1   # colour: better than the baseline = blue
        piv = v.pivot_table(index=['method', 'protocol'], columns='fraction', values='diff', sort=False)
        sig = v.assign(s=~((v.ci_low <= 0) & (0 <= v.ci_high))).pivot_table(index=['method', 'protocol'], columns='fraction', values='s', sort=False)
        lim = np.nanmax(np.abs(piv.values)) or 1
        ax.imshow(sign * piv.values, cmap='RdBu', vmin=-lim, vmax=lim, aspect='auto')
        for (r, c), d in np.ndenumerate(piv.values):
            if np.isfinite(d): ax.text(c, r, f'{d:+.2f}' + ('*' if sig.values[r, c] else ''), ha='center', va='center', fontsize=6.5)
        ax.set_xticks(range(piv.shape[1]), [f'{f:.0%}' for f in piv.columns])
        ax.set_yticks(range(piv.shape[0]), [f'{m} / {p}' for m, p in piv.index], fontsize=7)
        ax.set_title(f'{t}: {HEADLINE[t][0]} {label}', fontsize=9)
    fig.suptitle(title or 'Difference to the random-init baseline (same protocol; finetune vs scratch); * = paired 95 % CI excludes 0')
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


# ---------------------------------------------------------------- all outputs
def timing_table(T:pd.DataFrame) -> pd.DataFrame:
    if T.empty: return T
    T = T.copy(); T['protocol'] = T.get('protocol', pd.Series(index=T.index, dtype=object)).fillna('')
    return (T.groupby(['stage', 'method', 'protocol'], sort=False).seconds.agg(['count', 'mean', 'sum']).round(1)
             .rename(columns={'count': 'folds', 'mean': 'seconds per fold', 'sum': 'seconds total'}).reset_index())

def write_report(out:Path, results:pd.DataFrame, subgroups:pd.DataFrame, preds:pd.DataFrame, timings:pd.DataFrame,
                 methods, fractions, tasks, n_boot:int, seed:int, baseline:str) -> list[Path]:
    "Write every CSV, markdown table and PNG plot of the study into `out`; returns the files"
    out = Path(out); (out/'tables').mkdir(parents=True, exist_ok=True); (out/'plots').mkdir(exist_ok=True)
    files = []
    def csv(df, name): df.to_csv(out/name, index=False); files.append(out/name)
    L, per = long_results(results)
    G = gaps(subgroups)
    V = vs_baseline(preds, baseline, n_boot, seed)
    gap_rows = G.assign(metric=G.gap.map(lambda g: 'sex_gap' if g.startswith('sex') else 'age_gap'),
                        target=G.task.map(lambda t: HEADLINE[t][1]), ci_low=np.nan, ci_high=np.nan,
                        n=np.nan, n_train=np.nan, status='ok').reindex(columns=COLS) if len(G) else pd.DataFrame(columns=COLS)
    csv(pd.concat([L, gap_rows], ignore_index=True), 'results.csv'); csv(per, 'results_per_fold.csv')
    csv(subgroups.rename(columns={'encoder': 'method'}), 'subgroups.csv'); csv(G, 'gaps.csv'); csv(V, 'vs_baseline.csv')
    TT = timing_table(timings); csv(timings, 'timings.csv')
    S = vs_real(preds, n_boot, seed)
    if len(S): csv(S, 'vs_real.csv')
    H = head_to_head(preds, n_boot, seed); csv(H, 'head_to_head.csv')
    sections = []
    for t in tasks:
        tab = headline_table(L, t, methods, fractions)
        (out/'tables'/f'{t}.md').write_text(md(tab) + '\n'); files.append(out/'tables'/f'{t}.md')
        sections.append((f'{TASK_TITLES[t]} [95 % CI], by label fraction', tab))
    extra = [('subgroup_gaps', G.assign(value=G.value.round(3), p_value=G.p_value.round(3)) if len(G) else G,
              'Subgroup gaps (permutation p-value of the worse group vs the rest)'),
             ('vs_baseline', V.round(3) if len(V) else V, 'Paired difference to the random-init baseline'),
             ('head_to_head', H.round(3) if len(H) else H, 'Head to head: first method minus second (same protocol, paired)'),
             ('timings', TT, 'Wall time per unit (seconds)')]
    if len(S): extra.append(('vs_real', S.round(3), 'Real + synthetic pretraining minus the same method on real ECGs only (paired)'))
    for name, df, title in extra:
        (out/'tables'/f'{name}.md').write_text(md(df) + '\n'); files.append(out/'tables'/f'{name}.md')
        sections.append((title, df))
    for t in tasks:
        plot_curves(results, t, methods, out/'plots'/f'curves_{t}.png'); files.append(out/'plots'/f'curves_{t}.png')
    plot_gaps(G, tasks, list(methods), out/'plots'/'subgroup_gaps.png'); files.append(out/'plots'/'subgroup_gaps.png')
    plot_vs_baseline(V, tasks, out/'plots'/'vs_baseline.png'); files.append(out/'plots'/'vs_baseline.png')
    if len(S):
        plot_vs_baseline(S, tasks, out/'plots'/'vs_real.png', title='Real + synthetic pretraining minus real only '
                         '(same method and protocol); * = paired 95 % CI excludes 0', label='minus real only')
        files.append(out/'plots'/'vs_real.png')
    text = '# Study results\n\n' + '\n\n'.join(f'## {title}\n\n{md(df)}' for title, df in sections)
    text += '\n\n' + '\n'.join(f'![{p.stem}](plots/{p.name})' for p in files if p.suffix == '.png') + '\n'
    (out/'report.md').write_text(text); files.append(out/'report.md')
    return files
