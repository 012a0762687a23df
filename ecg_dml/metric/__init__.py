"""Metric learning: distances between ECGs or embeddings, miners that pick `(a, p, n)` triplets from them, and the
losses (triplet, margin, multi-similarity, NT-Xent, CLOCS, PCLR).

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.metric` costs
nothing, `from ecg_dml.metric import get_distance` imports `ecg_dml.metric.distances` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from ecg_dml import _lazy_exports

_FROM = {  # submodule -> the public names it defines
    'distances':   ['DISTANCES', 'get_distance', 'register_distance', 'pairwise_distances'],
    'dtw':         ['dtw_distances', 'soft_dtw'],
    'miners':      ['InputDistanceMiner', 'EmbeddingMiner', 'LabelMiner', 'ContinuousTargetMiner', 'KNNGraphMiner'],
    'losses':      ['MinedTripletLoss', 'MarginDMLLoss', 'MultiSimilarityDMLLoss'],
    'contrastive': ['NTXent', 'MinedNTXent', 'CLOCSLoss', 'PCLRLoss'],
    'positives':   ['pair_purity'],
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _FROM)
