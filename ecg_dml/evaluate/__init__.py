"""Judging a representation: `evaluate()` runs the protocols (linear probe, frozen MLP, finetune, scratch) over
label fractions, seeds and folds beside a random-init baseline, with bootstrap CIs, retrieval and subgroups;
embeddings and handcrafted ECG features for comparison.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.evaluate` costs
nothing, `from ecg_dml.evaluate import evaluate` imports `ecg_dml.evaluate.protocols` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from importlib import import_module as _import

_FROM = {  # submodule -> the public names it defines
    'protocols': ['evaluate', 'EvalResults', 'load_results', 'merge_results', 'plot_learning_curves', 'linear_probe',
                  'run_protocol', 'PROTOCOLS', 'FRACTIONS', 'EvaluateError'],
    'embed':     ['embed_dataset', 'Embeddings', 'plot_embedding_map'],
    'metrics':   ['bootstrap_metrics', 'paired_bootstrap', 'retrieval_metrics'],
    'subgroups': ['subgroup_metrics', 'forest_plot'],
    'features':  ['handcrafted_features', 'feature_matrix'],
}
__all__ = [name for names in _FROM.values() for name in names]
_MODULE = {name: mod for mod, names in _FROM.items() for name in names}

def __getattr__(name:str):
    "Import a public name from its submodule on first use (PEP 562)"
    if name not in _MODULE: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = globals()[name] = getattr(_import(f'{__name__}.{_MODULE[name]}'), name)
    return value

def __dir__(): return sorted({*globals(), *__all__})
