"""Batch augmentations of ECGs `[B, leads, T]` on their device (crops, noise, wander, masks, ...) and the 3KG
vectorcardiogram rotation and scaling.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.augment` costs
nothing, `from ecg_dml.augment import GaussianNoise` imports `ecg_dml.augment.core` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from importlib import import_module as _import

_FROM = {  # submodule -> the public names it defines
    'core': ['Compose', 'RandomCrop', 'RandomResizedCrop', 'TimeShift', 'GaussianNoise', 'BaselineWander',
             'PowerlineNoise', 'EMGNoise', 'AmplitudeScale', 'SignFlip', 'TimeReverse', 'TimeMask', 'LeadDropout',
             'BatchAug', 'plot_aug', 'AugmentError'],
    'vcg':  ['ThreeKG', 'ecg_to_vcg', 'vcg_to_ecg'],
}
__all__ = [name for names in _FROM.values() for name in names]
_MODULE = {name: mod for mod, names in _FROM.items() for name in names}

def __getattr__(name:str):
    "Import a public name from its submodule on first use (PEP 562)"
    if name not in _MODULE: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = globals()[name] = getattr(_import(f'{__name__}.{_MODULE[name]}'), name)
    return value

def __dir__(): return sorted({*globals(), *__all__})
