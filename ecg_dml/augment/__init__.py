"""Batch augmentations of ECGs `[B, leads, T]` on their device (crops, noise, wander, masks, ...) and the 3KG
vectorcardiogram rotation and scaling.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.augment` costs
nothing, `from ecg_dml.augment import GaussianNoise` imports `ecg_dml.augment.core` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from ecg_dml import _lazy_exports

_FROM = {  # submodule -> the public names it defines
    'core': ['Compose', 'RandomCrop', 'RandomResizedCrop', 'TimeShift', 'GaussianNoise', 'BaselineWander',
             'PowerlineNoise', 'EMGNoise', 'AmplitudeScale', 'SignFlip', 'TimeReverse', 'TimeMask', 'LeadDropout',
             'BatchAug', 'plot_aug', 'AugmentError'],
    'vcg':  ['ThreeKG', 'ecg_to_vcg', 'vcg_to_ecg'],
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _FROM)
