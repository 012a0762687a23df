"""Encoders, their heads, and encoder files: build an encoder by name, put a projection or task head on it, save
it with the config that rebuilds it and load it back.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.models` costs
nothing, `from ecg_dml.models import create_encoder` imports `ecg_dml.models.heads` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from importlib import import_module as _import

_FROM = {  # submodule -> the public names it defines
    'heads': ['ENCODERS', 'create_encoder', 'register_encoder', 'EncoderError', 'EmbeddingModel', 'TaskModel',
              'TaskHead', 'projection_head', 'embed'],
    'io':    ['save_encoder', 'load_encoder', 'read_checkpoint', 'CheckpointError'],
}
__all__ = [name for names in _FROM.values() for name in names]
_MODULE = {name: mod for mod, names in _FROM.items() for name in names}

def __getattr__(name:str):
    "Import a public name from its submodule on first use (PEP 562)"
    if name not in _MODULE: raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = globals()[name] = getattr(_import(f'{__name__}.{_MODULE[name]}'), name)
    return value

def __dir__(): return sorted({*globals(), *__all__})
