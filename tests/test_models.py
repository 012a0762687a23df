"Encoders, heads, registry and `embed`: shapes at 100/250/500 Hz, gradients, eval determinism, learning on real PTB-XL"
import ast
import numpy as np, pandas as pd, pytest, torch, wfdb
import torch.nn.functional as F
from torch import nn
from ecg_dml.core import sample_dir, LEADS, LEADS8, lead_index
from ecg_dml.models.resnet1d import resnet1d18, BasicBlock1d
from ecg_dml.models.temporalnet import TemporalNet, DualTemporalNet
from ecg_dml.models.heads import (ENCODERS, EncoderError, EmbeddingModel, ProjectionHead, TaskHead, TaskModel,
                                  create_encoder, embed, projection_head, register_encoder)

NAMES = ['resnet1d18', 'resnet1d34', 'xresnet1d18', 'xresnet1d34', 'xresnet1d50', 'xresnet1d101',
         'temporalnet', 'temporalnet_dual']
RESNETS = [n for n in NAMES if 'resnet' in n]
FEATURES = dict(resnet1d18=512, resnet1d34=512, xresnet1d18=128, xresnet1d34=128, xresnet1d50=512, xresnet1d101=512,
                temporalnet=512, temporalnet_dual=1024)
SMALL_TN = dict(nf0=8, widths=(8, 16, 16, 16))   # same TemporalNet code paths, ~1/250 of the compute

def _real(n=32, T=None):
    "First `n` bundled PTB-XL records [n, 12, 1000] (mV, via wfdb.rdsamp) and their superdiagnostic multi-hot labels"
    root = sample_dir()
    db = pd.read_csv(root/'ptbxl_database.csv', index_col='ecg_id').iloc[:n]
    st = pd.read_csv(root/'scp_statements.csv', index_col=0)
    st = st[st.diagnostic == 1]
    classes = ['NORM', 'MI', 'STTC', 'CD', 'HYP']
    sup = [{st.loc[c, 'diagnostic_class'] for c in ast.literal_eval(s) if c in st.index} for s in db.scp_codes]
    y = torch.tensor([[float(c in s) for c in classes] for s in sup])
    x = torch.from_numpy(np.stack([wfdb.rdsamp(str(root/f))[0].T for f in db.filename_lr]).astype(np.float32))
    return x[..., :T], y

@pytest.fixture(scope='module')
def real(): return _real(32)

def test_registry_names_and_errors():
    assert set(NAMES) <= set(ENCODERS)
    with pytest.raises(EncoderError, match='resnet1d18.*xresnet1d101'): create_encoder('resnet18')
    with pytest.raises(EncoderError, match='already registered'): register_encoder('resnet1d18', resnet1d18)
    with pytest.raises(EncoderError, match='leads='): create_encoder('temporalnet_dual', n_leads=5)
    try:
        @register_encoder('_test_tiny')
        def tiny(n_leads=12, nf=4):
            m = nn.Sequential(nn.Conv1d(n_leads, nf, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten()); m.n_features = nf
            return m
        assert create_encoder('_test_tiny', n_leads=3, nf=6)(torch.randn(2, 3, 50)).shape == (2, 6)
        register_encoder('_test_nosize', lambda n_leads: nn.Identity())
        with pytest.raises(EncoderError, match='n_features'): create_encoder('_test_nosize')
    finally:
        for k in ('_test_tiny', '_test_nosize'): ENCODERS.pop(k, None)

@pytest.mark.parametrize('name', RESNETS)
@pytest.mark.parametrize('n_leads', [12, 8])
def test_resnet_shapes_100_250_500_hz(name, n_leads):
    "10 s at 100, 250 and 500 Hz (T = 1000, 2500, 5000), 8 or 12 leads -> [B, n_features]"
    m = create_encoder(name, n_leads=n_leads).eval()
    assert m.n_features == FEATURES[name]
    with torch.no_grad():
        for T in (1000, 2500, 5000): assert m(torch.randn(1, n_leads, T)).shape == (1, FEATURES[name])
        assert m(torch.randn(3, n_leads, 33)).shape == (3, FEATURES[name])   # shorter than one heartbeat still works

@pytest.mark.parametrize('name', ['temporalnet', 'temporalnet_dual'])
@pytest.mark.parametrize('n_leads', [12, 8])
def test_temporalnet_shapes_100_250_500_hz(name, n_leads):
    "Full-size TemporalNets on the meta device (exact shapes, no arithmetic); a narrow one really run on the CPU"
    n_used = n_leads if name == 'temporalnet' else 8
    with torch.device('meta'): m = create_encoder(name, n_leads=n_leads).eval()
    small = create_encoder(name, n_leads=n_leads, **SMALL_TN).eval()
    for T in (1000, 2500, 5000):
        with torch.device('meta'): out = m.encode_leads(torch.empty(2, n_leads, T))
        assert out.leads.shape == (2, n_used, 512) and out.fused.shape == (2, FEATURES[name])
        with torch.no_grad(): out = small.encode_leads(torch.randn(1, n_leads, T))
        assert out.leads.shape == (1, n_used, 32) and out.fused.shape == (1, small.n_features)
        assert torch.isfinite(out.fused).all()

def _wake_zero_bn(m):
    "Give zero-initialised BatchNorm weights (xresnet's residual-branch trick) a value so gradients can flow through"
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d) and mod.weight is not None and not mod.weight.any(): mod.weight.fill_(1.)

@pytest.mark.parametrize('name', NAMES)
def test_gradient_reaches_every_parameter(name, real):
    kw = SMALL_TN if name.startswith('temporalnet') else {}
    m = EmbeddingModel(create_encoder(name, **kw)).train()
    _wake_zero_bn(m)
    x = real[0][:4, :, :200]
    F.mse_loss(m(x), torch.randn(4, 128)).backward()
    for pn, p in m.named_parameters():
        assert p.grad is not None, f'{name}: no gradient for {pn}'
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f'{name}: zero or non-finite gradient for {pn}'

def test_full_size_temporalnet_gradients():
    "the full-size per-lead encoder (short input) also gets gradients everywhere, through folded leads"
    m = TemporalNet().train(); _wake_zero_bn(m)
    m.encode_leads(torch.randn(2, 3, 64)).leads.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())

@pytest.mark.parametrize('name', NAMES)
def test_eval_is_deterministic_and_per_sample(name, real):
    "eval(): same output twice, and a record's output does not depend on the rest of its batch (BN running stats)"
    kw = SMALL_TN if name.startswith('temporalnet') else {}
    m = create_encoder(name, p=0.5, **kw).eval()
    x = real[0][:4, :, :300]
    with torch.no_grad():
        a, b = m(x), m(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(m(x[2:3]), a[2:3], rtol=1e-4, atol=1e-5)
        m.train()
        assert not torch.equal(m(x), m(x)), 'dropout p=0.5 should make training-mode passes differ'

def test_no_modules_created_in_forward(real):
    m = EmbeddingModel(resnet1d18()).eval()
    before = [n for n, _ in m.named_modules()]
    with torch.no_grad(): m(real[0][:2, :, :300])
    assert [n for n, _ in m.named_modules()] == before
    assert sum(isinstance(o, nn.Dropout) for o in m.modules()) == 8   # one per BasicBlock, all registered

def test_temporalnet_folding_equals_per_lead_loop(real):
    "folding leads into the batch gives the same embeddings as encoding every lead separately"
    m = TemporalNet(**SMALL_TN).eval()
    x = real[0][:3, :, :400]
    with torch.no_grad():
        out = m.encode_leads(x)
        loop = torch.stack([m.lead_encoder(x[:, l:l+1]) for l in range(12)], 1)
    torch.testing.assert_close(out.leads, loop, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.fused, loop.mean(1))

def test_dual_temporalnet_groups_and_order(real):
    m = DualTemporalNet(**SMALL_TN).eval()
    x = real[0][:2, :, :400]
    assert m.lead_names == LEADS8
    with torch.no_grad():
        out = m.encode_leads(x)
        for name in LEADS8:
            enc = m.encoders[0] if name in ('I', 'II', 'V5', 'V6') else m.encoders[1]
            row = LEADS.index(name)
            torch.testing.assert_close(out.leads[:, m.lead_names.index(name)], enc(x[:, row:row+1]), rtol=1e-4, atol=1e-5)
        # limb leads derived from I and II (III, aVR, aVL, aVF) are not used: changing them changes nothing
        x2 = x.clone(); x2[:, 2:6] = 0
        torch.testing.assert_close(m(x2), out.fused)
        m8 = DualTemporalNet(leads=LEADS8, **SMALL_TN).eval(); m8.load_state_dict(m.state_dict())
        torch.testing.assert_close(m8(x[:, lead_index(LEADS8)]), out.fused, rtol=1e-4, atol=1e-5)

def test_heads():
    ph = projection_head(512, 64, hidden=(256, 128))
    assert [type(o).__name__ for o in ph] == ['Linear', 'BatchNorm1d', 'ReLU'] * 2 + ['Linear'] and ph.n_out == 64
    assert ProjectionHead([(8, 4, nn.LayerNorm(4), nn.Tanh())])(torch.randn(3, 8)).abs().max() <= 1
    th = TaskHead(512, 3).eval()
    assert [type(o).__name__ for o in th] == ['Linear', 'BatchNorm1d', 'ReLU', 'Dropout', 'Linear']
    assert th[3].p == 0.3 and th[0].out_features == 128 and th(torch.randn(2, 512)).shape == (2, 3)

def test_embedding_model_unit_norm_and_encoder_access(real):
    enc = create_encoder('xresnet1d34')
    m = EmbeddingModel(enc, n_out=32).eval()
    assert m.encoder is enc and m.n_out == 32
    with torch.no_grad(): z = m(real[0][:5])
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    raw = EmbeddingModel(enc, normalize=False).eval()
    with torch.no_grad(): assert not torch.allclose(raw(real[0][:5]).norm(dim=1), torch.ones(5))

def test_embed_batches_mode_and_device(real):
    m = EmbeddingModel(create_encoder('xresnet1d18')).train()
    x = real[0][:10, :, :500]
    z = embed(m, x, bs=3, device='cpu')
    assert z.shape == (10, 128) and z.device.type == 'cpu' and m.training
    torch.testing.assert_close(embed(m, x.numpy(), bs=10), z, rtol=1e-4, atol=1e-5)
    m.eval()
    with torch.no_grad(): torch.testing.assert_close(m(x), z, rtol=1e-4, atol=1e-5)
    assert embed(m, x[:0]).numel() == 0

@pytest.mark.parametrize('name,T', [('resnet1d18', 128), ('xresnet1d18', 250)])
def test_overfits_one_batch_of_real_ptbxl(name, T, real):
    "32 real PTB-XL ECGs (their first T samples at 100 Hz), superdiagnostic multi-label: Adam drives the loss near zero"
    x, y = real[0][..., :T], real[1]
    assert y.sum(0).min() >= 1 and (y.sum(0) < 32).all()   # every class present and absent: a real learning problem
    torch.manual_seed(0)
    m = TaskModel(create_encoder(name), n_out=5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.binary_cross_entropy_with_logits(m(x), y)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
        if loss.item() < 0.05: break
    assert losses[0] > 0.5 and losses[-1] < 0.05, \
        f'{name}: training loss {losses[0]:.3f} -> {losses[-1]:.3f} after {len(losses)} steps'
