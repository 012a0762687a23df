"pretrain(): resume after SIGKILL ends where an uninterrupted run ends; CLI; checkpoints load weights-only"
import signal, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ecg_dml.models.io import CheckpointError, load_encoder, read_checkpoint

RUN = """
import sys, numpy as np
from ecg_dml.core import sample_dir
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.wfdb import read_record
from ecg_dml.pretrain import pretrain
import torch; torch.set_num_threads(1)
df = ptbxl_index(sample_dir()).iloc[:96]
x = np.stack([read_record(p).signal[:, :500] for p in df.path])   # 5 s: room for beat templates
kw = dict(method=sys.argv[2], encoder='xresnet1d18', epochs=3, bs=16, lr=3e-3, seconds=5, out=sys.argv[1],
          progress=False)
mode = sys.argv[3] if len(sys.argv) > 3 else ''
if mode == 'kill':    # SIGKILL itself in the middle of the second epoch (after its second batch)
    import os, signal
    from fastai.callback.core import Callback
    class KillMidEpoch(Callback):
        order = 99
        def after_batch(self):
            if self.training and self.epoch == 1 and self.iter == 1: os.kill(os.getpid(), signal.SIGKILL)
    learn = pretrain(x, fit=False, **kw)
    learn.fit_one_cycle(3, 3e-3, cbs=KillMidEpoch())
else: pretrain(x, resume=mode == 'resume', **kw)
"""

def _run(out, method='dml', mode=''):
    return subprocess.Popen([sys.executable, '-c', RUN, str(out), method] + ([mode] if mode else []),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

@pytest.mark.parametrize('method', ['dml', 'dml-paper', 'dml-template-triplet', 'simclr'])
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, method):
    ref = _run(tmp_path/'ref', method); out_ref = ref.communicate()[0]
    assert ref.returncode == 0, out_ref
    p = _run(tmp_path/'killed', method, 'kill'); p.communicate()
    assert p.returncode == -signal.SIGKILL                   # it really died by SIGKILL, mid-epoch
    ck = tmp_path/'killed'/'checkpoint.pth'
    assert read_checkpoint(ck)['epoch'] == 0                 # only the first epoch was checkpointed
    r = _run(tmp_path/'killed', method, 'resume'); out = r.communicate()[0]
    assert r.returncode == 0 and 'resuming' in out, out
    a, b = read_checkpoint(tmp_path/'ref'/'checkpoint.pth'), read_checkpoint(ck)
    assert a['epoch'] == b['epoch'] == 2
    for k in a['model']: torch.testing.assert_close(a['model'][k], b['model'][k], rtol=1e-5, atol=1e-6)
    la, lb = pd.read_csv(tmp_path/'ref'/'log.csv'), pd.read_csv(tmp_path/'killed'/'log.csv')
    assert lb.epoch.tolist() == [0, 1, 2]        # rewritten from the checkpoint on resume: no gaps, no repeats
    la, lb = la.set_index('epoch'), lb.set_index('epoch')
    np.testing.assert_allclose(la[['train_loss', 'valid_loss']], lb[['train_loss', 'valid_loss']], rtol=1e-5)
    np.testing.assert_allclose(la[['active_fraction', 'top1', 'purity', 'purity_chance']], lb[['active_fraction', 'top1', 'purity', 'purity_chance']], rtol=1e-5)
    assert not list((tmp_path/'killed').glob('.*.tmp'))

def test_checkpoint_is_weights_only_and_encoder_reloads(tmp_path):
    r = _run(tmp_path/'run'); out = r.communicate()[0]
    assert r.returncode == 0, out
    enc, cfg = load_encoder(tmp_path/'run')
    assert cfg['method'] == 'dml' and cfg['n_leads'] == 12
    enc2, _ = load_encoder(tmp_path/'run'/'checkpoint.pth')
    x = torch.randn(3, 12, 500)
    torch.testing.assert_close(enc(x), enc2.eval()(x))
    ck = torch.load(tmp_path/'run'/'checkpoint.pth', weights_only=True)   # raises if anything needs unpickling
    assert set(ck) >= {'model', 'opt', 'epoch', 'rng', 'config', 'history'}

def test_cli_on_the_bundled_sample(tmp_path):
    exe = Path(sys.executable).parent/'ecg_dml_pretrain'
    r = subprocess.run([str(exe), '--epochs', '1', '--bs', '32', '--out', str(tmp_path/'cli')],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'kNN probe' in r.stdout and 'random init' in r.stdout and 'encoder saved to' in r.stdout
    assert 'positive purity' in r.stdout, r.stdout             # make demo reports whether mining finds anything
    assert (tmp_path/'cli'/'encoder.pth').exists()
    h = subprocess.run([str(exe), '--help'], capture_output=True, text=True)
    assert h.returncode == 0 and '--method' in h.stdout and 'clocs-cmsc' in h.stdout

class _Payload:
    def __reduce__(self): return (print, ('this ran while unpickling',))

def test_tampered_or_truncated_checkpoint_is_refused_at_every_entry_point(tmp_path):
    "A checkpoint that needs code to unpickle, or a truncated one: CheckpointError naming the file, never weights_only=False advice"
    from ecg_dml.evaluate.protocols import resolve_encoder
    from ecg_dml.pretrain import pretrain
    r = _run(tmp_path/'run'); out = r.communicate()[0]
    assert r.returncode == 0, out
    good = torch.load(tmp_path/'run'/'checkpoint.pth', weights_only=True)
    torch.save({**good, 'config': {**good['config'], 'x': _Payload()}}, tmp_path/'run'/'checkpoint.pth')
    torch.save({'encoder': {}, 'config': _Payload()}, tmp_path/'run'/'encoder.pth')
    for f in (lambda: load_encoder(tmp_path/'run'), lambda: load_encoder(tmp_path/'run'/'checkpoint.pth'),
              lambda: resolve_encoder(tmp_path/'run'/'encoder.pth')):
        with pytest.raises(CheckpointError, match='not a safe ecg_dml checkpoint') as e: f()
        assert 'torch.load(weights_only=False) unless you made it yourself' in str(e.value) and 'set to `False`' not in str(e.value)
    x = np.random.default_rng(0).normal(0, .1, (40, 12, 500)).astype(np.float32)
    with pytest.raises(CheckpointError, match='checkpoint.pth: not a safe'):
        pretrain(x, encoder='xresnet1d18', epochs=1, bs=16, seconds=5, out=tmp_path/'run', resume=True, progress=False)
    (tmp_path/'run'/'encoder.pth').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(CheckpointError, match='corrupt or truncated'): load_encoder(tmp_path/'run'/'encoder.pth')

def test_rerun_into_an_existing_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    from ecg_dml.pretrain import pretrain, RunExistsError
    x = np.random.default_rng(0).normal(0, .1, (40, 12, 500)).astype(np.float32)
    kw = dict(method='simclr', encoder='xresnet1d18', epochs=1, bs=16, seconds=5, out=tmp_path/'run', progress=False)
    pretrain(x, **kw)
    before = (tmp_path/'run'/'checkpoint.pth').read_bytes()
    with pytest.raises(RunExistsError, match=r'resume=True to continue it \(CLI --resume\), overwrite=True to replace it'):
        pretrain(x, **kw)
    assert (tmp_path/'run'/'checkpoint.pth').read_bytes() == before          # untouched
    pretrain(x, overwrite=True, **{**kw, 'epochs': 2})
    assert 'deleted the previous run' in capsys.readouterr().out
    assert read_checkpoint(tmp_path/'run'/'checkpoint.pth')['epoch'] == 1 and len(pd.read_csv(tmp_path/'run'/'log.csv')) == 2
    exe = Path(sys.executable).parent/'ecg_dml_pretrain'
    r = subprocess.run([str(exe), '--epochs', '1', '--bs', '32', '--method', 'simclr', '--out', str(tmp_path/'cli')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), '--epochs', '1', '--bs', '32', '--method', 'simclr', '--out', str(tmp_path/'cli')], capture_output=True, text=True)
    assert r.returncode != 0 and '--overwrite' in r.stderr and '--resume' in r.stderr
    r = subprocess.run([str(exe), '--epochs', '1', '--bs', '32', '--method', 'simclr', '--out', str(tmp_path/'cli'), '--overwrite'], capture_output=True, text=True)
    assert r.returncode == 0 and 'deleted the previous run' in r.stdout, r.stderr
