"""Worker of tests/test_distributed.py, started by torchrun (gloo, CPU) or run alone as the single-process reference.

    python ddp_worker.py losses OUT       every loss of LOSSES on this process's part of a fixed global batch
    python ddp_worker.py train OUT BS     a few optimizer steps of a fastai Learner (self-supervised DML)

Each process writes OUT/<mode>_rank<r>_of<w>.pt; the test compares the files of 2 processes with those of 1.
"""
import os, sys
from pathlib import Path
import numpy as np, torch
from fastai.callback.core import Callback
from ecg_dml.core import BatchInfo, make_generator, sample_dir, set_seed
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.wfdb import read_record
from ecg_dml.data.loaders import ecg_dls
from ecg_dml.distributed import init_distributed, gather_batch, GatherLoss, distribute
from ecg_dml.learner import dml_learner, rank_world, unwrap_model
from ecg_dml.metric.miners import InputDistanceMiner, LabelMiner, KNNGraphMiner, RecordLookup, knn_graph
from ecg_dml.metric.losses import MinedTripletLoss, MarginDMLLoss, MultiSimilarityDMLLoss
from ecg_dml.metric.contrastive import NTXent, CLOCSLoss, PCLRLoss, MinedNTXent
from ecg_dml.models.heads import EmbeddingModel, create_encoder
from ecg_dml.views import simclr_views, clocs_segments, clocs_leads, flatten_views

N, D = 16, 24   # global batch of ECGs, embedding size

def ecgs(n=N, T=250):
    idx = ptbxl_index(sample_dir())
    x = np.stack([read_record(p).signal[:, :T] for p in idx.path[:n]])
    sup = idx.superdiagnostic.map(lambda s: 'NORM' in s).to_numpy()[:n].astype(np.int64)
    pid = idx.patient_id.to_numpy()[:n].astype(np.int64) % 5    # force shared patients (PCLR positives)
    return torch.from_numpy(x), torch.from_numpy(sup), torch.from_numpy(pid), torch.from_numpy(idx.index.to_numpy()[:n])

# name -> (loss factory, views factory or None, uses labels)
LOSSES = {
    'triplet-euclidean': (lambda: MinedTripletLoss(InputDistanceMiner(neg_k=2)), None, False),
    'triplet-correlation': (lambda: MinedTripletLoss(InputDistanceMiner(metric='correlation')), None, False),
    'margin-beta': (lambda: MarginDMLLoss(), None, False),
    'supervised-semihard': (lambda: MinedTripletLoss(LabelMiner(kind='semihard')), None, True),
    'multi-similarity': (lambda: MultiSimilarityDMLLoss(by='labels'), None, True),
    'ntxent-simclr': (lambda: NTXent(0.1), lambda: simclr_views(), False),
    'clocs-cmsc': (lambda: CLOCSLoss('cmsc'), lambda: clocs_segments(2), False),
    'clocs-cmlc': (lambda: CLOCSLoss('cmlc'), lambda: clocs_leads(), False),
    'pclr': (lambda: PCLRLoss(0.1), None, False),
    # self-supervised DML that learns: mined neighbours (a global kNN graph, or in-batch by looked-up per-record arrays)
    'mined-ntxent-graph-own-view': (lambda: MinedNTXent(KNNGraphMiner(_graph(), ids=ecgs()[3])), lambda: simclr_views(), False),
    'mined-ntxent-batch-lookup': (lambda: MinedNTXent(InputDistanceMiner(pos_k=3, lookup=RecordLookup(ecgs()[0], ecgs()[3])),
                                                      own_view=False), None, False),
    'triplet-graph-semihard': (lambda: MinedTripletLoss(KNNGraphMiner(_graph(), ids=ecgs()[3], neg='semihard')), None, False),
}

def _graph():
    "A 5-NN graph over the test ECGs (the same in every process)"
    return knn_graph(ecgs()[0], k=5, device='cpu')[0]

def global_batch(name):
    "The global batch every run agrees on: rows, BatchInfo and embeddings (leaf), built identically in every process"
    x, y, pid, rid = ecgs()
    _, views, labels = LOSSES[name]
    if views is None:
        s = torch.arange(N)
        info = BatchInfo(labels=y if labels else None, record_ids=rid, patient_ids=pid, raw=x)
        ecg_of_row, rows_of = s, lambda r0, r1: torch.arange(r0, r1)
    else:
        vs = views()(x, 100, generator=make_generator(7))
        xv, s, v = flatten_views(vs)
        info = BatchInfo(record_ids=rid[s], patient_ids=pid[s], view_ids=v, sample_ids=s, raw=x)
        V = len(vs)
        rows_of = lambda r0, r1: torch.cat([torch.arange(r0, r1) + k * N for k in range(V)])
    emb = torch.randn(len(info), D, generator=make_generator(11))
    return x, info, emb, rows_of

def local_part(info, emb, rows, r0, r1):
    "What process r holds: its ECGs r0:r1 and their rows (views numbered within the process, view-major)"
    f = {k: (None if getattr(info, k) is None else getattr(info, k)[rows]) for k in
         ('labels', 'record_ids', 'patient_ids', 'view_ids')}
    f['sample_ids'] = None if info.sample_ids is None else info.sample_ids[rows] - r0
    return emb[rows], BatchInfo(**f, raw=info.raw[r0:r1])

def run_losses(out):
    rank, world = rank_world()
    res = {}
    for name, (make, _, _) in LOSSES.items():
        x, info, emb, rows_of = global_batch(name)
        B = N // world; r0, r1 = rank * B, (rank + 1) * B
        rows = rows_of(r0, r1)
        e, inf = local_part(info, emb, rows, r0, r1)
        e = e.clone().requires_grad_()
        torch.manual_seed(3)                       # the miners' random choices: same stream in every process
        loss = GatherLoss(make())
        val = loss(e, inf)
        val.backward()
        # the gradient of the global loss w.r.t. this process's rows: DDP divides the summed gradient by `world`
        res[name] = {'loss': val.detach(), 'grad': e.grad / world, 'rows': rows}
        for n, prm in loss.named_parameters():
            if n.endswith('beta'): res[name]['beta_grad'] = prm.grad.clone()
    torch.save(res, Path(out)/f'losses_rank{rank}_of{world}.pt')

class FreezeBN(Callback):
    "BatchNorm in eval mode (running statistics): per-process batch statistics would differ from one process's"
    order = 1
    def before_batch(self):
        for m in self.learn.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm): m.eval()

class StepLosses(Callback):
    order = 60
    def before_fit(self): self.losses = []
    def after_batch(self):
        if self.training: self.losses.append(float(self.learn.loss))

def run_train(out, global_bs):
    rank, world = rank_world()
    x, _, pid, rid = ecgs(n=4 * global_bs)
    set_seed(0)
    dls = ecg_dls(x.numpy(), bs=global_bs // world, with_ids=True, record_ids=rid.numpy(), patient_ids=pid.numpy(),
                  seed=0, device='cpu', rank=rank, world_size=world)
    model = EmbeddingModel(create_encoder('xresnet1d18'), n_out=32)
    steps = StepLosses()
    learn = dml_learner(dls, model, MarginDMLLoss(InputDistanceMiner()), cbs=[FreezeBN(), steps], clip=1.0)
    distribute(learn)
    learn.fit(1, 1e-3)
    state = {k: v.detach().clone() for k, v in unwrap_model(learn.model).state_dict().items()}
    beta = next(p.detach().clone() for n, p in learn.loss_func.named_parameters() if n.endswith('beta'))
    torch.save({'losses': steps.losses, 'state': state, 'beta': beta, 'n_batches': len(dls.train)},
               Path(out)/f'train_rank{rank}_of{world}.pt')

if __name__ == '__main__':
    torch.set_num_threads(1)
    init_distributed('cpu')
    mode, out = sys.argv[1], sys.argv[2]
    try:
        if mode == 'losses': run_losses(out)
        elif mode == 'train': run_train(out, int(sys.argv[3]))
        else: raise SystemExit(f'unknown mode {mode!r}')
    finally:   # an orderly teardown: both ranks leave the group together (gloo's threads otherwise can abort at exit)
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier(); dist.destroy_process_group()
