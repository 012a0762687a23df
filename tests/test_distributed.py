"""Data-parallel training with 2 CPU processes (torchrun, gloo) against one process with the same global batch:
every loss's value and gradients, the weights after a few optimizer steps of a fastai Learner, and the
`ecg_dml_pretrain` command under torchrun (rank-0 outputs, resume guard)."""
import os, socket, subprocess, sys
from pathlib import Path
import pandas as pd, pytest, torch

HERE = Path(__file__).parent
WORKER = HERE/'ddp_worker.py'
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402

def _port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _env():
    return {**os.environ, 'ECG_DML_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}

def torchrun(*args, n=2, timeout=900):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(n), '--master_addr', '127.0.0.1',
           '--master_port', str(_port()), *map(str, args)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r

def single(*args, timeout=900):
    r = subprocess.run([sys.executable, *map(str, args)], env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r

@pytest.fixture(scope='module')
def loss_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp_losses')
    torchrun(WORKER, 'losses', out)
    single(WORKER, 'losses', out)
    return [torch.load(out/f'losses_rank{r}_of2.pt') for r in (0, 1)], torch.load(out/'losses_rank0_of1.pt')

@pytest.mark.parametrize('name', list(ddp_worker.LOSSES))
def test_gathered_loss_equals_single_process(loss_runs, name):
    parts, one = loss_runs
    ref = one[name]
    assert float(ref['loss']) > 0
    for p in parts: torch.testing.assert_close(p[name]['loss'], ref['loss'], rtol=1e-5, atol=1e-6)
    # each process's gradient (after DDP's division by the world size) is the single process's gradient of its rows
    for p in parts:
        torch.testing.assert_close(p[name]['grad'], ref['grad'][p[name]['rows']], rtol=1e-4, atol=1e-7)
    assert sum(float(p[name]['grad'].abs().sum()) for p in parts) > 0
    if 'beta_grad' in ref:   # a parameter of the loss: the same gradient in every process, no averaging needed
        for p in parts: torch.testing.assert_close(p[name]['beta_grad'], ref['beta_grad'], rtol=1e-5, atol=1e-7)

def test_gather_without_correction_would_be_wrong(loss_runs):
    "Guard against a vacuous comparison: local (ungathered) NT-Xent differs from the global one"
    x, info, emb, rows_of = ddp_worker.global_batch('ntxent-simclr')
    e, inf = ddp_worker.local_part(info, emb, rows_of(0, 8), 0, 8)
    local = ddp_worker.NTXent(0.1)(e, inf)
    assert abs(float(local) - float(loss_runs[1]['ntxent-simclr']['loss'])) > 1e-3

def test_ddp_learner_matches_single_process(tmp_path):
    torchrun(WORKER, 'train', tmp_path, 16)
    single(WORKER, 'train', tmp_path, 16)
    r0, r1, one = (torch.load(tmp_path/f) for f in ('train_rank0_of2.pt', 'train_rank1_of2.pt', 'train_rank0_of1.pt'))
    assert one['n_batches'] == r0['n_batches'] == 4
    # the loss of every step: same global batch, same mining, same weights
    torch.testing.assert_close(torch.tensor(r0['losses']), torch.tensor(one['losses']), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.tensor(r1['losses']), torch.tensor(one['losses']), rtol=1e-4, atol=1e-6)
    changed = 0
    for k, v in one['state'].items():
        torch.testing.assert_close(r0['state'][k], v, rtol=1e-4, atol=1e-5, msg=k)
        torch.testing.assert_close(r1['state'][k], r0['state'][k], rtol=0, atol=0, msg=k)  # replicas stay identical
    torch.testing.assert_close(r0['beta'], one['beta'], rtol=1e-5, atol=1e-6)
    # and training did move the weights
    fresh = ddp_worker.EmbeddingModel(ddp_worker.create_encoder('xresnet1d18'), n_out=32).state_dict()
    assert any(not torch.allclose(fresh[k].float(), v.float()) for k, v in one['state'].items() if v.is_floating_point())

def test_pretrain_cli_under_torchrun(tmp_path):
    out = tmp_path/'run'
    r = torchrun('--no-python', Path(sys.executable).parent/'ecg_dml_pretrain', '--epochs', '1', '--bs', '16',
                 '--out', out)
    assert '2 processes, global batch 32' in r.stdout
    assert r.stdout.count('encoder saved to') == 1                       # rank 0 reports alone
    log = pd.read_csv(out/'log.csv'); assert len(log) == 1              # one writer, one row
    from ecg_dml.pretrain import load_encoder, pretrain
    enc, cfg = load_encoder(out)
    assert cfg['world_size'] == 2 and cfg['bs'] == 16
    # resuming with one process would change the global batch: refused
    with pytest.raises(ValueError, match='another configuration'):
        pretrain(None or ddp_worker.sample_dir(), encoder='xresnet1d18', epochs=1, bs=16, lr=3e-3, out=out,
                 resume=True, progress=False, device='cpu')
