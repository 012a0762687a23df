"""ECGs in: read WFDB records and PTB-XL, store them once as float32 millivolt shards, open any source as
`(signals, meta)`, add beat templates, and load batches.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.data` costs
nothing, `from ecg_dml.data import open_ecgs` imports `ecg_dml.data.sources` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from ecg_dml import _lazy_exports

_FROM = {  # submodule -> the public names it defines
    'sources': ['open_ecgs', 'DataError'],
    'wfdb':    ['read_record', 'scan_wfdb'],
    'header':  ['RecordError'],
    'ptbxl':   ['ptbxl_index', 'fold_split', 'patient_split', 'label_matrix', 'SUPERCLASSES', 'PTBXLError'],
    'store':   ['build_store', 'ECGStore', 'validate_store', 'StoreError'],
    'beats':   ['add_beats', 'beat_templates', 'BeatStore'],
    'loaders': ['ecg_dls', 'plot_ecg'],
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _FROM)
