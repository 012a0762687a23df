"Encoder files and checkpoints (models.io): every registered encoder round-trips, wrappers, run checkpoints, atomicity, the old names"
import json, warnings
import numpy as np, pytest, torch
from torch import nn
from ecg_dml.core import sample_dir
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.wfdb import read_record
from ecg_dml.models.heads import ENCODERS, EmbeddingModel, TaskModel, create_encoder
from ecg_dml.models.io import CheckpointError, load_encoder, read_checkpoint, save_checkpoint, save_encoder

KW = {'temporalnet': dict(nf0=8, widths=(8, 16, 16, 16)), 'temporalnet_dual': dict(nf0=8, widths=(8, 16, 16, 16))}

@pytest.fixture(scope='module')
def real():
    "Four real PTB-XL ECGs of the bundled sample, first 2.5 s [4, 12, 250] mV"
    df = ptbxl_index(sample_dir()).iloc[:4]
    return torch.from_numpy(np.stack([read_record(p).signal[:, :250] for p in df.path])).float()

@pytest.mark.parametrize('name', sorted(ENCODERS))
def test_every_registered_encoder_round_trips(name, real, tmp_path):
    torch.manual_seed(0)
    cfg = {'encoder': name, 'n_leads': 12, 'encoder_kw': KW.get(name, {}), 'method': 'anything else is kept'}
    enc = create_encoder(name, **cfg['encoder_kw']).eval()
    back, cfg2 = load_encoder(save_encoder(enc, tmp_path/'e.pth', cfg), device='cpu')
    assert cfg2 == json.loads(json.dumps(cfg)) and not back.training and type(back) is type(enc)   # tuples come back as lists
    for (k, a), (k2, b) in zip(enc.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with torch.no_grad(): torch.testing.assert_close(back(real), enc(real))

class _FakeLearner:
    "What save_encoder uses of a fastai Learner made by pretrain: `.model` and `.pretrain_config`"
    def __init__(self, model, cfg): self.model, self.pretrain_config = model, cfg

def test_wrappers_learners_and_run_checkpoints(real, tmp_path):
    cfg = {'encoder': 'xresnet1d18', 'n_leads': 12}
    enc = create_encoder('xresnet1d18').eval()
    want = enc.state_dict()
    for i, m in enumerate([EmbeddingModel(enc), TaskModel(enc, 5), _FakeLearner(nn.DataParallel(EmbeddingModel(enc)), cfg)]):
        save_encoder(m, tmp_path/f'{i}.pth', None if isinstance(m, _FakeLearner) else cfg)
        assert list(read_checkpoint(tmp_path/f'{i}.pth')['encoder']) == list(want)      # no head, no 'module.' prefix
    run = tmp_path/'run'
    save_checkpoint(run/'checkpoint.pth', {'model': EmbeddingModel(enc).state_dict(), 'config': {**cfg, 'epochs': 3}})
    a, ca = load_encoder(run, device='cpu')                                         # only a checkpoint: a killed run
    assert ca['epochs'] == 3
    save_encoder(enc, run/'encoder.pth', {**cfg, 'epochs': 4})
    b, cb = load_encoder(run, device='cpu')                                         # encoder.pth is preferred
    assert cb['epochs'] == 4
    with torch.no_grad(): torch.testing.assert_close(a(real), b(real))

def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    cfg = {'encoder': 'xresnet1d18', 'n_leads': 12}
    p = save_encoder(create_encoder('xresnet1d18'), tmp_path/'encoder.pth', cfg)
    before = p.read_bytes()
    def boom(obj, f, *a, **k): f.write(b'half a file'); raise KeyboardInterrupt('killed while saving')
    monkeypatch.setattr(torch, 'save', boom)
    with pytest.raises(KeyboardInterrupt): save_encoder(create_encoder('xresnet1d18'), p, cfg)
    monkeypatch.undo()
    assert p.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ['encoder.pth']
    load_encoder(p, device='cpu')

def test_old_names_keep_working():
    "learner's and pretrain's names are the models.io objects; the two old `load_checkpoint`s warn and name the replacement"
    import ecg_dml.learner as learner, ecg_dml.pretrain as pretrain, ecg_dml.models.io as io
    import ecg_dml.evaluate.protocols as protocols
    assert learner.save_checkpoint is io.save_checkpoint and learner.CheckpointError is io.CheckpointError
    assert pretrain.load_encoder is io.load_encoder and pretrain.save_encoder is io.save_encoder
    assert {'save_checkpoint', 'CheckpointError', 'load_checkpoint'} <= set(learner.__all__)
    assert {'save_encoder', 'load_encoder'} <= set(pretrain.__all__) and 'load_checkpoint' in protocols.__all__
    assert 'load_checkpoint' not in io.__all__                                      # one name, one meaning

def test_deprecated_load_checkpoints_warn(tmp_path):
    from ecg_dml.learner import load_checkpoint as learner_load
    from ecg_dml.evaluate.protocols import load_checkpoint as protocols_load
    p = save_encoder(create_encoder('xresnet1d18'), tmp_path/'encoder.pth', {'encoder': 'xresnet1d18', 'n_leads': 12})
    with pytest.warns(DeprecationWarning, match='use ecg_dml.models.io.read_checkpoint'): ck = learner_load(p)
    assert set(ck) == {'encoder', 'config'}
    with pytest.warns(DeprecationWarning, match='use ecg_dml.models.io.load_encoder'): enc, cfg = protocols_load(p)
    assert enc.n_features == 128 and cfg['encoder'] == 'xresnet1d18'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        load_encoder(p, device='cpu'); read_checkpoint(p)                            # the new names do not warn
    with pytest.raises(CheckpointError, match='no such checkpoint file'): learner_load(tmp_path/'none.pth')
