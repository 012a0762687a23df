"""Metric learning: distances between ECGs or embeddings, miners that pick `(a, p, n)` triplets from them, and the
losses (triplet, margin, multi-similarity, NT-Xent, CLOCS, PCLR).

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.metric` costs
nothing, `from ecg_dml.metric import get_distance` imports `ecg_dml.metric.distances` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from importlib import import_module as _import

_FROM = {  # submodule -> the public names it defines
    'distances':   ['DISTANCES', 'get_distance', 'register_distance', 'pairwise_distances'],
    'dtw':         ['dtw_distances', 'soft_dtw'],
    'miners':      ['InputDistanceMiner', 'EmbeddingMiner', 'LabelMiner', 'ContinuousTargetMiner', 'KNNGraphMiner'],
    'losses':      ['MinedTripletLoss', 'MarginDMLLoss', 'MultiSimilarityDMLLoss'],
    'contrastive': ['NTXent', 'MinedNTXent', 'CLOCSLoss', 'PCLRLoss'],
    'positives':   ['pair_purity'],
}
__all__ = [name for names in _FROM.values() for name in names]
_MODULE = {name: mod for mod, names in _FROM.items() for name in names}

def __getattr__(name:str):
    "Import a public name from its submodule on first use (PEP 562)"
    if name not in _MODULE: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = globals()[name] = getattr(_import(f'{__name__}.{_MODULE[name]}'), name)
    return value

def __dir__(): return sorted({*globals(), *__all__})
