"""Encoders, their heads, and encoder files: build an encoder by name, put a projection or task head on it, save
it with the config that rebuilds it and load it back; the pretrained encoders shipped in the package.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.models` costs
nothing, `from ecg_dml.models import create_encoder` imports `ecg_dml.models.heads` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from ecg_dml import _lazy_exports

_FROM = {  # submodule -> the public names it defines
    'heads': ['ENCODERS', 'create_encoder', 'register_encoder', 'EncoderError', 'EmbeddingModel', 'TaskModel',
              'TaskHead', 'projection_head', 'embed', 'check_input', 'InputError'],
    'io':    ['save_encoder', 'load_encoder', 'read_checkpoint', 'CheckpointError'],
    'pretrained': ['list_pretrained', 'load_pretrained', 'write_pretrained', 'PretrainedError'],
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _FROM)
