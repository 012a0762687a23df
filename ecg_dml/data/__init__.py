"""ECGs in: read WFDB records and PTB-XL, store them once as float32 millivolt shards, open any source as
`(signals, meta)`, add beat templates, and load batches.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.data` costs
nothing, `from ecg_dml.data import open_ecgs` imports `ecg_dml.data.sources` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from importlib import import_module as _import

_FROM = {  # submodule -> the public names it defines
    'sources': ['open_ecgs', 'DataError'],
    'wfdb':    ['read_record', 'scan_wfdb', 'RecordError'],
    'ptbxl':   ['ptbxl_index', 'fold_split', 'patient_split', 'label_matrix', 'SUPERCLASSES', 'PTBXLError'],
    'store':   ['build_store', 'ECGStore', 'validate_store', 'StoreError'],
    'beats':   ['add_beats', 'beat_templates', 'BeatStore'],
    'loaders': ['ecg_dls', 'plot_ecg'],
}
__all__ = [name for names in _FROM.values() for name in names]
_MODULE = {name: mod for mod, names in _FROM.items() for name in names}

def __getattr__(name:str):
    "Import a public name from its submodule on first use (PEP 562)"
    if name not in _MODULE: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = globals()[name] = getattr(_import(f'{__name__}.{_MODULE[name]}'), name)
    return value

def __dir__(): return sorted({*globals(), *__all__})
