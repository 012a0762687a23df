"Losses against brute-force loops (distances x margins x dtypes), against pytorch-metric-learning, on random and real PTB-XL inputs; learnable beta, patient positives, finite gradients, fastai use"
import itertools, math
import numpy as np, pytest, torch
import torch.nn.functional as F
from torch import nn
from pytorch_metric_learning import losses as pml_losses, reducers as pml_reducers
from pytorch_metric_learning.distances import LpDistance
from ecg_dml.core import BatchInfo, get_device, sample_dir
from ecg_dml.data.ptbxl import ptbxl_index, label_matrix
from ecg_dml.data.wfdb import read_record
from ecg_dml.metric.miners import InputDistanceMiner, LabelMiner, Miner, MiningError
from ecg_dml.metric.losses import MarginDMLLoss, MinedLoss, MinedTripletLoss, MultiSimilarityDMLLoss
from ecg_dml.metric.contrastive import CLOCSLoss, NTXent, PCLRLoss, contrastive_masks, info_nce

DEV = get_device()   # $ECG_DML_DEVICE (cpu / cuda) or fastai's default
DTYPES = [torch.float32, torch.float64]
MARGINS = [0.05, 0.2, 1.0]

def tol(dtype): return 1e-5 if dtype == torch.float32 else 1e-10

class FixedMiner(Miner):
    "Returns the triplets it was given (so a loss can be compared with a loop on known triplets)"
    def __init__(self, t): self.t = t
    def mine(self, x, info): return tuple(u.to(x.device) for u in self.t)

@pytest.fixture(scope='module')
def real():
    "72 real ECGs (the sample's multi-ECG patients first) with patient ids and superdiagnostic labels"
    df = ptbxl_index(sample_dir())
    multi = df.patient_id.duplicated(keep=False).to_numpy()
    df = df.iloc[np.concatenate([np.nonzero(multi)[0], np.nonzero(~multi)[0]])[:72]]
    x = torch.from_numpy(np.stack([read_record(p).signal for p in df.path]))
    return dict(x=x, y=torch.from_numpy(label_matrix(df, 'superdiagnostic')[0]),
                pid=torch.tensor(df.patient_id.to_numpy()), ids=torch.tensor(df.index.to_numpy()))

def real_emb(x, dim=32, seed=0, dtype=torch.float32):
    "Embeddings of real ECGs through a fixed random linear map (a stand-in encoder)"
    W = torch.randn(x[0].numel(), dim, generator=torch.Generator().manual_seed(seed)) / 100
    return (x.flatten(1) @ W).to(dtype)

def random_triplets(R, n, seed=0):
    "Random (a, p, n) with three distinct rows"
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, R, (n,), generator=g)
    p, n_ = (a + torch.randint(1, R, (n,), generator=g)) % R, (a + torch.randint(1, R, (n,), generator=g)) % R
    keep = n_ != p
    return a[keep], p[keep], n_[keep]

# ---------------------------------------------------------------- loop references (plain Python over triplets)
def bf_d(e, i, j, distance):
    u, v = e[i], e[j]
    if distance == 'cosine': return sum(a * b for a, b in zip(u, v))                # similarity
    s = sum((a - b) ** 2 for a, b in zip(u, v))
    return s if distance == 'sqeuclidean' else math.sqrt(s)

def normed(emb):
    e = emb.detach().cpu().double().numpy()
    return [list(r / np.linalg.norm(r)) for r in e]

def bf_triplet(emb, t, margin, distance, reducer):
    e = normed(emb); terms = []
    for a, p, n in zip(*[u.tolist() for u in t]):
        dap, dan = bf_d(e, a, p, distance), bf_d(e, a, n, distance)
        terms.append(max(0., (dan - dap if distance == 'cosine' else dap - dan) + margin))
    if reducer == 'nonzero':
        nz = [v for v in terms if v > 0]
        return sum(nz) / len(nz) if nz else 0.
    return sum(terms) / len(terms) if terms else 0.

def bf_margin(emb, t, margin, beta):
    e = normed(emb); total, count = 0., 0
    for a, p, n in zip(*[u.tolist() for u in t]):
        lp = max(0., bf_d(e, a, p, 'euclidean') - beta + margin)
        ln = max(0., beta - bf_d(e, a, n, 'euclidean') + margin)
        total += lp + ln; count += (lp > 0) + (ln > 0)
    return total / count if count else 0.

def bf_info_nce_row(l, i, P, Nn, denominator):
    "Sum over positives j of row i of -log(e^l_ij / denominator)"
    out = []
    for j in P:
        den = [l[i][k] for k in Nn] + ([l[i][j]] if denominator == 'negatives' else [l[i][k] for k in P])
        m = max(den)
        out.append(-(l[i][j] - m - math.log(sum(math.exp(v - m) for v in den))))
    return out

def bf_ntxent(emb, sample, pat, tau, patient_positives, exclude, denominator='negatives', rec=None):
    z = normed(emb); R = len(z)
    l = [[sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(R)] for i in range(R)]
    terms = []
    for i in range(R):
        def is_pos(j):
            if j == i: return False
            if sample[j] == sample[i] or (rec is not None and rec[j] == rec[i]): return True
            return pat is not None and patient_positives and pat[j] == pat[i]
        P = [j for j in range(R) if is_pos(j)]
        Nn = [j for j in range(R) if j != i and not is_pos(j) and sample[j] != sample[i]
              and not (pat is not None and (exclude or patient_positives) and pat[j] == pat[i])]
        terms += bf_info_nce_row(l, i, P, Nn, denominator)
    return sum(terms) / len(terms)

def bf_clocs(emb, V, N, pat, tau, patient_positives, denominator):
    z = normed(emb); terms = []
    for v, w in itertools.permutations(range(V), 2):
        for i in range(N):
            ri = v * N + i
            l = {0: [sum(a * b for a, b in zip(z[ri], z[w * N + j])) / tau for j in range(N)]}
            P = [j for j in range(N) if j == i or (patient_positives and pat is not None and pat[j] == pat[i])]
            Nn = [j for j in range(N) if j not in P and not (pat is not None and pat[j] == pat[i])]
            terms += bf_info_nce_row(l, 0, P, Nn, denominator)
    return sum(terms) / len(terms)

def bf_multi_similarity(emb, labels, alpha=2., beta=50., base=0.5):
    z = normed(emb); R = len(z); total = 0.
    for i in range(R):
        s = [sum(a * b for a, b in zip(z[i], z[j])) for j in range(R)]
        P = [j for j in range(R) if j != i and labels[j] == labels[i]]
        Nn = [j for j in range(R) if labels[j] != labels[i]]
        if P: total += math.log(1 + sum(math.exp(-alpha * (s[j] - base)) for j in P)) / alpha
        if Nn: total += math.log(1 + sum(math.exp(beta * (s[j] - base)) for j in Nn)) / beta
    return total / R

# ---------------------------------------------------------------- triplet loss
@pytest.mark.parametrize('distance', ['sqeuclidean', 'euclidean', 'cosine'])
@pytest.mark.parametrize('margin', MARGINS)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('reducer', ['mean', 'nonzero'])
def test_triplet_loss_matches_loop(distance, margin, dtype, reducer):
    emb = torch.randn(20, 6, generator=torch.Generator().manual_seed(1), dtype=dtype)
    t = random_triplets(20, 60)
    loss = MinedTripletLoss(FixedMiner(t), margin, distance, reducer=reducer)
    e = emb.to(DEV).requires_grad_()
    out = loss(e, BatchInfo())
    assert out.dtype == dtype
    assert out.item() == pytest.approx(bf_triplet(emb, t, margin, distance, reducer), abs=tol(dtype), rel=tol(dtype))
    out.backward(); assert torch.isfinite(e.grad).all()
    act = [max(0., v) > 0 for v in [bf_triplet(emb, tuple(u[i:i + 1] for u in t), margin, distance, 'mean')
                                      for i in range(len(t[0]))]]
    assert float(loss.stats['active_fraction']) == pytest.approx(np.mean(act), abs=1e-6)
    assert loss.stats['n_triplets'] == len(t[0])

@pytest.mark.parametrize('distance', ['sqeuclidean', 'euclidean'])
def test_triplet_loss_equals_pml_on_real_mined_triplets(real, distance):
    emb = real_emb(real['x']).to(DEV).requires_grad_()
    info = BatchInfo(raw=real['x'].to(DEV), patient_ids=real['pid'].to(DEV))
    loss = MinedTripletLoss(InputDistanceMiner(generator=torch.Generator().manual_seed(0)), distance=distance)
    out = loss(emb, info)
    ref = pml_losses.TripletMarginLoss(margin=0.2, reducer=pml_reducers.MeanReducer(),
                                       distance=LpDistance(p=2, power=2 if distance == 'sqeuclidean' else 1))
    assert out.item() == pytest.approx(ref(emb, indices_tuple=loss.last_indices).item(), rel=1e-6)
    assert out.item() == pytest.approx(bf_triplet(emb, loss.last_indices, 0.2, distance, 'mean'), rel=1e-5)
    a, p, n = loss.last_indices
    assert len(a) == len(real['x']) and (info.patient_ids[a] != info.patient_ids[n]).all()

def test_triplet_loss_default_is_the_paper_setting(real):
    loss = MinedTripletLoss()
    assert isinstance(loss.miner, InputDistanceMiner) and loss.miner.neg_k == 2 and loss.miner.pos_k == 1
    assert loss.loss.margin == 0.2 and loss.loss.distance.power == 2 and loss.loss.distance.normalize_embeddings
    with pytest.raises(MiningError, match='info.raw'): loss(torch.randn(4, 8), BatchInfo())
    with pytest.raises(ValueError, match='reducer'): MinedTripletLoss(reducer='sum')

# ---------------------------------------------------------------- margin loss and its beta
@pytest.mark.parametrize('margin', MARGINS)
@pytest.mark.parametrize('beta', [0.8, 1.2])
@pytest.mark.parametrize('dtype', DTYPES)
def test_margin_loss_matches_loop(margin, beta, dtype):
    emb = torch.randn(20, 6, generator=torch.Generator().manual_seed(2), dtype=dtype)
    t = random_triplets(20, 60, seed=3)
    loss = MarginDMLLoss(FixedMiner(t), margin=margin, beta=beta).to(DEV)
    e = emb.to(DEV).requires_grad_()
    out = loss(e, BatchInfo())
    assert out.item() == pytest.approx(bf_margin(emb, t, margin, beta), abs=tol(dtype) * 10, rel=1e-5)
    out.backward()
    assert torch.isfinite(e.grad).all() and loss.loss.beta.grad is not None and torch.isfinite(loss.loss.beta.grad).all()

def test_margin_beta_is_a_parameter_and_is_optimised(real):
    loss = MarginDMLLoss().to(DEV)
    assert [n for n, _ in loss.named_parameters()] == ['loss.beta'] and 'loss.beta' in loss.state_dict()
    emb = real_emb(real['x']).to(DEV).requires_grad_()
    info = BatchInfo(raw=real['x'].to(DEV), patient_ids=real['pid'].to(DEV))
    opt = torch.optim.Adam([emb, *loss.parameters()], lr=1e-2)
    before = loss.beta
    opt.zero_grad(); loss(emb, info).backward()
    assert loss.loss.beta.grad.abs().item() > 0
    opt.step()
    assert loss.beta != before and abs(loss.beta - before) == pytest.approx(1e-2, rel=1e-3)   # Adam's first step: lr
    fixed = MarginDMLLoss(learn_beta=False)
    assert list(fixed.parameters()) == [] and fixed.beta == pytest.approx(1.2)

def test_margin_loss_in_a_fastai_learner_moves_beta(real):
    from fastai.callback.core import Callback
    from fastai.learner import Learner
    from ecg_dml.data.loaders import ecg_dls
    class ToInfo(Callback):
        def before_batch(self):
            x, ids = self.xb[0], self.yb[0]
            self.learn.yb = (BatchInfo(record_ids=ids[:, 0], patient_ids=ids[:, 1], raw=x),)
    x = real['x'][:, :, :500].numpy()
    dls = ecg_dls(x, split=(np.arange(60), np.arange(60, 72)), bs=30, with_ids=True, patient_ids=real['pid'].numpy(),
                  device=DEV)
    model = nn.Sequential(nn.Conv1d(12, 8, 15, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(32, 16))
    loss = MarginDMLLoss().to(DEV)
    learn = Learner(dls, model, loss_func=loss, cbs=ToInfo(),
                    splitter=lambda m: [list(m.parameters()), list(loss.parameters())])
    learn.fit(1, lr=1e-2)
    assert loss.beta != pytest.approx(1.2, abs=1e-4)
    assert all(np.isfinite(v) for v in learn.recorder.values[-1])

# ---------------------------------------------------------------- multi-similarity
@pytest.mark.parametrize('dtype', DTYPES)
def test_multi_similarity_matches_pml_and_loop(real, dtype):
    emb = real_emb(real['x'][:40], 16, dtype=dtype)
    labels = real['y'][:40].argmax(1)
    out = MultiSimilarityDMLLoss()(emb.to(DEV), BatchInfo(labels=labels.to(DEV)))
    assert out.item() == pytest.approx(pml_losses.MultiSimilarityLoss()(emb, labels).item(), rel=1e-5)
    assert out.item() == pytest.approx(bf_multi_similarity(emb, labels.tolist()), rel=1e-5, abs=tol(dtype))

def test_multi_similarity_never_uses_same_patient_negatives(real):
    emb = real_emb(real['x'][:40], 16, dtype=torch.float64)
    labels, pat = real['y'][:40].argmax(1), real['pid'][:40]
    loss = MultiSimilarityDMLLoss()
    info = BatchInfo(labels=labels, patient_ids=pat)
    a1, p, a2, n = loss.indices(emb, info)
    assert (pat[a2] != pat[n]).all() and (labels[a1] == labels[p]).all() and (labels[a2] != labels[n]).all()
    loop_neg = [(i, j) for i in range(40) for j in range(40) if labels[i] != labels[j] and pat[i] != pat[j]]
    assert sorted(zip(a2.tolist(), n.tolist())) == loop_neg
    assert sum(1 for i in range(40) for j in range(40) if labels[i] != labels[j] and pat[i] == pat[j]) > 0
    loss(emb, info); assert loss.stats['n_neg_pairs'] == len(loop_neg)

# ---------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize('V', [2, 3])
@pytest.mark.parametrize('tau', [0.1, 0.5])
@pytest.mark.parametrize('dtype', DTYPES)
def test_ntxent_matches_loop_and_pml(V, tau, dtype):
    N = 10
    emb = torch.randn(V * N, 8, generator=torch.Generator().manual_seed(4), dtype=dtype)
    sample = torch.arange(N).repeat(V)
    info = BatchInfo(sample_ids=sample.to(DEV), view_ids=torch.arange(V).repeat_interleave(N).to(DEV))
    e = emb.to(DEV).requires_grad_()
    out = NTXent(tau)(e, info)
    assert out.item() == pytest.approx(bf_ntxent(emb, sample.tolist(), None, tau, False, True), rel=1e-5, abs=tol(dtype))
    assert out.item() == pytest.approx(pml_losses.NTXentLoss(temperature=tau)(emb, sample).item(), rel=1e-5)
    out.backward(); assert torch.isfinite(e.grad).all()

def test_ntxent_two_views_is_simclr(real):
    "With 2 views, our loss is SimCLR's: -log softmax over all other 2N-1 rows, averaged over the 2N rows"
    N = 24
    emb = real_emb(torch.cat([real['x'][:N, :, :500], real['x'][:N, :, 500:]]), dtype=torch.float64)
    z = F.normalize(emb, dim=1); s = z @ z.T / 0.1
    s.fill_diagonal_(float('-inf'))
    target = torch.cat([torch.arange(N, 2 * N), torch.arange(N)])
    ref = F.cross_entropy(s, target)
    out = NTXent()(emb, BatchInfo(sample_ids=torch.arange(N).repeat(2), view_ids=torch.arange(2).repeat_interleave(N)))
    assert out.item() == pytest.approx(ref.item(), rel=1e-10)

@pytest.mark.parametrize('patient_positives', [False, True])
@pytest.mark.parametrize('exclude', [False, True])
def test_ntxent_patients_real_matches_loop(real, patient_positives, exclude):
    N = 30
    x = torch.cat([real['x'][:N, :, :500], real['x'][:N, :, 500:]])
    emb = real_emb(x, dtype=torch.float64)
    sample, pat = torch.arange(N).repeat(2), real['pid'][:N].repeat(2)
    info = BatchInfo(sample_ids=sample.to(DEV), view_ids=torch.arange(2).repeat_interleave(N).to(DEV), patient_ids=pat.to(DEV))
    loss = NTXent(patient_positives=patient_positives, exclude_same_patient=exclude)
    out = loss(emb.to(DEV), info)
    ref = bf_ntxent(emb, sample.tolist(), pat.tolist(), 0.1, patient_positives, exclude)
    assert out.item() == pytest.approx(ref, rel=1e-9)
    pos, neg = loss.masks(emb.to(DEV), info)
    same_pat = pat[:, None] == pat[None, :]
    if exclude or patient_positives: assert not (neg.cpu() & same_pat).any()   # same patient: never a negative
    if patient_positives: assert (pos.cpu() == (same_pat & ~torch.eye(2 * N, dtype=torch.bool))).all()
    if patient_positives:
        assert out.item() == pytest.approx(pml_losses.NTXentLoss(temperature=0.1)(emb, pat).item(), rel=1e-9)

# ---------------------------------------------------------------- CLOCS
@pytest.mark.parametrize('V', [2, 4])
@pytest.mark.parametrize('denominator', ['negatives', 'all'])
@pytest.mark.parametrize('patient_positives', [True, False])
def test_clocs_matches_loop_real_patients(real, V, denominator, patient_positives):
    N = 16
    seg = real['x'][:N].unfold(-1, 1000 // V, 1000 // V)               # V adjacent segments [N, 12, V, T/V]
    x = torch.cat([seg[:, :, v] for v in range(V)])
    emb = real_emb(x, seed=V, dtype=torch.float64)
    pat = real['pid'][:N]
    assert (pat[:, None] == pat[None]).sum() > N                         # the batch holds same-patient ECGs
    info = BatchInfo(sample_ids=torch.arange(N).repeat(V).to(DEV), view_ids=torch.arange(V).repeat_interleave(N).to(DEV),
                     patient_ids=pat.repeat(V).to(DEV))
    mode = 'cmsmlc' if V == 4 else 'cmsc'
    e = emb.to(DEV).requires_grad_()
    out = CLOCSLoss(mode, patient_positives=patient_positives, denominator=denominator)(e, info)
    assert out.item() == pytest.approx(bf_clocs(emb, V, N, pat.tolist(), 0.1, patient_positives, denominator), rel=1e-9)
    out.backward(); assert torch.isfinite(e.grad).all()

def test_clocs_differs_from_ntxent_and_checks_layout():
    N = 8
    emb = torch.randn(2 * N, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    info = BatchInfo(sample_ids=torch.arange(N).repeat(2), view_ids=torch.arange(2).repeat_interleave(N))
    z = F.normalize(emb, dim=1); s = z @ z.T / 0.1
    ref = (F.cross_entropy(s[:N, N:], torch.arange(N)) + F.cross_entropy(s[N:, :N], torch.arange(N))) / 2
    assert CLOCSLoss()(emb, info).item() == pytest.approx(ref.item(), rel=1e-10)        # symmetric cross-view InfoNCE
    assert CLOCSLoss()(emb, info).item() != pytest.approx(NTXent()(emb, info).item(), rel=1e-3)
    with pytest.raises(MiningError, match='needs views'): CLOCSLoss()(emb, BatchInfo())
    bad = BatchInfo(sample_ids=torch.arange(N).repeat_interleave(2), view_ids=torch.arange(2).repeat(N))
    with pytest.raises(MiningError, match='view-major'): CLOCSLoss()(emb, bad)
    with pytest.raises(MiningError, match='at least 4 views'): CLOCSLoss('cmsmlc')(emb, info)
    with pytest.raises(ValueError, match='mode'): CLOCSLoss('cpc')

def test_clocs_negatives_denominator_pulls_every_positive_in():
    "Gradient sign: with 'negatives', every positive logit has a negative gradient; 'all' can push a positive away"
    g = torch.Generator().manual_seed(6)
    for _ in range(20):
        lg = (torch.randn(6, 10, generator=g, dtype=torch.float64) * 3).requires_grad_()
        pos = torch.rand(6, 10, generator=g) < 0.3; neg = ~pos & (torch.rand(6, 10, generator=g) < 0.8)
        gr, = torch.autograd.grad(info_nce(lg, pos, neg, 'negatives'), lg)
        assert (gr[pos] <= 0).all() and (gr[neg] >= 0).all() and (gr[~pos & ~neg] == 0).all()
    lg = torch.tensor([[5., 1., 0., -1.]], requires_grad=True)
    gr, = torch.autograd.grad(info_nce(lg, torch.tensor([[1, 1, 0, 0]]).bool(), torch.tensor([[0, 0, 1, 1]]).bool(), 'all'), lg)
    assert gr[0, 0] > 0

# ---------------------------------------------------------------- PCLR
def test_pclr_matches_loop_and_pml_real(real):
    x, pat, rec = real['x'][:40, :, :500], real['pid'][:40], real['ids'][:40]
    emb = real_emb(x, dtype=torch.float64)
    info = BatchInfo(patient_ids=pat.to(DEV), record_ids=rec.to(DEV))
    loss = PCLRLoss()
    e = emb.to(DEV).requires_grad_()
    out = loss(e, info)
    assert out.item() == pytest.approx(bf_ntxent(emb, list(range(40)), pat.tolist(), 0.1, True, True, rec=rec.tolist()), rel=1e-9)
    assert out.item() == pytest.approx(pml_losses.NTXentLoss(temperature=0.1)(emb, pat).item(), rel=1e-9)
    pos, neg = loss.masks(e, info)
    same = (pat[:, None] == pat[None]).to(DEV)
    assert not (neg & same).any() and (pos == (same & ~torch.eye(40, dtype=torch.bool, device=DEV))).all()
    assert float(loss.stats['rows_with_positive']) == pytest.approx(float(pos.any(1).float().mean()))
    out.backward(); assert torch.isfinite(e.grad).all()
    with pytest.raises(MiningError, match='patient_ids'): loss(e, BatchInfo())

# ---------------------------------------------------------------- degenerate inputs, gradients, dtypes
LOSSES = {
    'triplet': lambda: MinedTripletLoss(),
    'triplet-semihard-labels': lambda: MinedTripletLoss(LabelMiner('semihard')),
    'margin': lambda: MarginDMLLoss(),
    'multi-similarity': lambda: MultiSimilarityDMLLoss(),
    'ntxent': lambda: NTXent(),
    'ntxent-patients': lambda: NTXent(patient_positives=True),
    'clocs': lambda: CLOCSLoss(),
    'clocs-all': lambda: CLOCSLoss(denominator='all'),
    'pclr': lambda: PCLRLoss(),
}

@pytest.mark.parametrize('name', list(LOSSES))
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', ['real', 'duplicates', 'one-patient'])
def test_every_loss_gives_finite_values_and_gradients(real, name, dtype, case):
    N = 12
    x = real['x'][:N]
    emb = real_emb(torch.cat([x[:, :, :500], x[:, :, 500:]]), dtype=dtype)
    pat = real['pid'][:N]
    if case == 'duplicates': emb[1] = emb[0]; emb[N + 1] = emb[N]; emb[N + 2] = emb[2]   # identical embeddings
    if case == 'one-patient': pat = torch.zeros(N, dtype=torch.long)                      # no negatives at all
    info = BatchInfo(labels=real['y'][:N].repeat(2, 1).to(DEV), patient_ids=pat.repeat(2).to(DEV),
                     sample_ids=torch.arange(N).repeat(2).to(DEV), view_ids=torch.arange(2).repeat_interleave(N).to(DEV),
                     raw=x.to(DEV))
    e = emb.to(DEV).requires_grad_()
    loss = LOSSES[name]().to(DEV)
    out = loss(e, info)
    assert out.ndim == 0 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(e.grad).all()
    if case == 'one-patient' and name not in ('multi-similarity', 'clocs-all'):
        assert out.item() == pytest.approx(0., abs=1e-6)          # nothing may be a negative: nothing to push away

def test_empty_mining_gives_zero_loss_with_graph():
    e = torch.randn(3, 4, device=DEV, requires_grad=True)
    out = MinedTripletLoss()(e, BatchInfo(raw=torch.randn(3, 2, 10, device=DEV), patient_ids=torch.zeros(3, dtype=torch.long, device=DEV)))
    assert out.item() == 0. and out.requires_grad
    out.backward(); assert (e.grad == 0).all()

# ---------------------------------------------------------------- cost next to the encoder

# --- MinedNTXent: InfoNCE over mined neighbours (self-supervised DML that keeps a learning signal) ---------------
from ecg_dml.metric.contrastive import MinedNTXent
from ecg_dml.metric.miners import KNNGraphMiner, knn_graph

def _mined_ntxent_loop(emb, nb, sample, pid, tau, own_view, denominator):
    "The definition, one anchor and one positive at a time: positives = neighbours (+ own views), negatives = the rest"
    z = F.normalize(emb.double(), dim=1); R = len(z); terms = []
    for a in range(R):
        for p in range(R):
            if a == p: continue
            same = bool(sample[a] == sample[p])
            is_nb = bool((nb[a, p] or nb[p, a]) and not same)
            if not (is_nb or (own_view and same)): continue
            negs = [n for n in range(R) if n != a and sample[n] != sample[a] and not (nb[a, n] or nb[n, a])
                    and (pid is None or pid[n] != pid[a])]
            pos_all = [q for q in range(R) if q != a and (((nb[a, q] or nb[q, a]) and sample[q] != sample[a]) or (own_view and sample[q] == sample[a]))]
            s = lambda j: float(z[a] @ z[j]) / tau
            den = [s(n) for n in negs] + ([s(p)] if denominator == 'negatives' else [s(q) for q in pos_all])
            terms.append(-s(p) + math.log(sum(math.exp(v) for v in den)))
    return sum(terms) / len(terms)

@pytest.mark.parametrize('own_view,denominator,tau', [(True, 'negatives', 0.1), (False, 'negatives', 0.5),
                                                      (True, 'all', 0.2), (False, 'all', 0.1)])
def test_mined_ntxent_equals_loop_on_real_ecgs(real, own_view, denominator, tau):
    "Two views of 20 real ECGs, positives from a 3-NN graph of the raw ECGs: the loss equals the loop definition"
    x, pid = real['x'][:20], real['pid'][:20]
    rid = torch.arange(100, 120)
    g, _ = knn_graph(x, k=3, device='cpu')
    sample = torch.arange(20).repeat(2)
    info = BatchInfo(record_ids=rid[sample], patient_ids=pid[sample], sample_ids=sample,
                     view_ids=torch.arange(2).repeat_interleave(20), raw=x)
    emb = torch.randn(40, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    miner = KNNGraphMiner(g, ids=rid)
    loss = MinedNTXent(miner, tau=tau, own_view=own_view, denominator=denominator)
    val = loss(emb, info)
    nb = miner.neighbours(emb, info)
    ref = _mined_ntxent_loop(emb.detach(), nb, sample, pid[sample], tau, own_view, denominator)
    assert abs(val.detach().item() - ref) < 1e-9, (val.detach().item(), ref)
    val.backward(); assert torch.isfinite(emb.grad).all()
    m = loss.mined                                        # mined pairs by record id: graph neighbours, never the own view
    assert (m.anchors != m.positives).all() and len(m.anchors) == int(((nb | nb.T) & (sample[:, None] != sample[None, :])).sum())
