#!/usr/bin/env bash
# Device check: does ecg_dml train correctly and fast on this machine's GPU? One command, one report file.
#
#   bash benchmarks/device_check.sh                 # on a CUDA GPU (about 5-8 minutes on one GPU)
#   bash benchmarks/device_check.sh --cpu           # the same steps on the CPU, short (how tests/test_device_check.py runs it)
#   bash benchmarks/device_check.sh --out DIR       # where the report and the logs go [device_check]
#
# Steps, each timed and logged to DIR/<step>.log; the report DIR/report.md lists every step's status and key lines:
#   env         versions, the device torch sees (name, memory, bf16 support), ecg_dml's device
#   tests       the device-parametrised tests (augmentations, losses, miners) with ECG_DML_DEVICE set to the device
#   amp         a short pretraining of two methods (dml, simclr) in fp32, fp16 and bf16 autocast on the bundled sample:
#               finite losses, seconds per epoch, and the fp16/bf16 losses next to fp32's
#   perf        the performance report's training-step rows (benchmarks/perf_report.py --sections step) on the device
#   ddp         a 1-process data-parallel run under torchrun (NCCL on CUDA, gloo on --cpu) of ecg_dml_pretrain
# A failing step does not stop the others; the exit status is the number of failed steps (0: all passed).
# Run it from the repository root with the package installed (make install, or pip install -e .).
set -u -o pipefail
DEVICE=cuda; OUT=device_check; QUICK=0; ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) DEVICE=cpu; QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "device_check: unknown option $1 (--cpu, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python}"
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(dirname "$HERE")"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"; REPORT="$OUT/report.md"
export ECG_DML_DEVICE="$DEVICE" PYTHONWARNINGS=ignore
if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "device_check: torch sees no CUDA device; run with --cpu to check the script itself" >&2; exit 2
fi
FAILED=0
printf '# ecg_dml device check\n\n- device: %s\n- started: %s\n- command: %s\n\n| step | status | seconds |\n|---|---|---|\n' \
  "$DEVICE" "$(date -u +%FT%TZ)" "bash $0 $ARGS" > "$REPORT.steps"
: > "$REPORT.details"

step() {   # step NAME COMMAND...: run it, log it, record status and time
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "== $name" >&2
  ( cd "$REPO" && "$@" ) > "$OUT/$name.log" 2>&1
  local rc=$? t=$(( $(date +%s) - t0 ))
  local status=passed; [ $rc -eq 0 ] || { status="FAILED (exit $rc)"; FAILED=$((FAILED + 1)); }
  echo "| $name | $status | $t |" >> "$REPORT.steps"
  { echo; echo "## $name: $status"; echo; echo '```'; grep -E '^(RESULT|FAIL|passed|failed|ERROR)|[0-9]+ (passed|failed)|global batch|encoder saved|kNN probe|^wrote' "$OUT/$name.log" | tail -40
    [ $rc -eq 0 ] || tail -25 "$OUT/$name.log"; echo '```'; } >> "$REPORT.details"
  echo "   $status in ${t}s (log: $OUT/$name.log)" >&2
}

step env "$PY" - <<'EOF'
import json, torch
from ecg_dml.core import get_device, versions
d = get_device()
info = dict(device=str(d), torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
if d.type == 'cuda':
    p = torch.cuda.get_device_properties(d)
    info.update(name=p.name, memory_gb=round(p.total_memory / 2**30, 1), capability=f'{p.major}.{p.minor}',
                bf16=torch.cuda.is_bf16_supported())
print('RESULT', json.dumps(info)); print('RESULT versions', json.dumps(versions()))
EOF

TESTS="tests/test_augment.py tests/test_losses.py tests/test_miners.py"
if [ $QUICK = 1 ]; then step tests "$PY" -m pytest -q -x tests/test_augment.py -k "device or cuda or generator"
else step tests "$PY" -m pytest -q $TESTS; fi

step amp env QUICK=$QUICK OUT="$OUT" "$PY" - <<'EOF'
import json, os, sys, tempfile, time, warnings
import numpy as np, pandas as pd
from ecg_dml.core import get_device, sample_dir
from ecg_dml.pretrain import pretrain
warnings.simplefilter('ignore')
quick = os.environ['QUICK'] == '1'
dev = get_device(); rows = []
modes = (False, 'fp16', 'bf16')
for method in ('dml', 'simclr'):
    for mp in modes:
        out = tempfile.mkdtemp()
        t0 = time.perf_counter()
        learn = pretrain(sample_dir(), method=method, epochs=1 if quick else 3, bs=32 if quick else 64, seconds=2.5 if quick else 10,
                         out=out, mixed_precision=mp, progress=False, probe=False, seed=0)
        log = pd.read_csv(f'{out}/log.csv')
        amp = [type(c).__name__ for c in learn.cbs if type(c).__name__ == 'MixedPrecision']
        rows.append(dict(method=method, precision=mp or 'fp32', epochs=len(log), last_loss=float(log.train_loss.iloc[-1]),
                         finite=bool(np.isfinite(log.train_loss).all()), seconds=round(time.perf_counter() - t0, 1),
                         autocast=bool(amp)))
t = pd.DataFrame(rows)
for m, g in t.groupby('method'):
    ref = g[g.precision == 'fp32'].last_loss.iloc[0]
    t.loc[g.index, 'loss_vs_fp32'] = (g.last_loss - ref).round(4)
print(t.to_string(index=False))
for r in t.itertuples(): print(f'RESULT {r.method} {r.precision}: loss {r.last_loss:.4f} ({r.loss_vs_fp32:+.4f} vs fp32), '
                               f'{r.seconds} s, finite={r.finite}, autocast={r.autocast}')
bad = t[~t.finite]
if len(bad): sys.exit(f'FAIL non-finite losses: {bad.to_dict("records")}')
if dev.type == 'cuda' and not t[t.precision != 'fp32'].autocast.all(): sys.exit('FAIL a mixed-precision run had no autocast')
EOF

if [ $QUICK = 1 ]; then step perf "$PY" -m benchmarks.perf_report --quick --sections step --out "$OUT/perf"
else step perf "$PY" -m benchmarks.perf_report --sections step --out "$OUT/perf"; fi
[ -f "$OUT/perf/step.csv" ] && { echo; echo "## perf: training-step rows"; echo; "$PY" -c "
import pandas as pd; from benchmarks.benchtools import md_table
print(md_table(pd.read_csv('$OUT/perf/step.csv')))" 2>/dev/null; } >> "$REPORT.details"

cat > "$OUT/ddp_smoke.py" <<'EOF'
# One process of a torchrun group: the process group (NCCL on CUDA, gloo on CPU), an all-reduce, then one epoch of
# pretraining with the data-parallel pieces pretrain uses for several processes (GatherLoss, DDP via fastai's
# DistributedTrainer), which a world of 1 would otherwise skip.
import sys, torch, torch.distributed as dist
from ecg_dml.core import sample_dir
from ecg_dml.distributed import GatherLoss, distributed_trainer, init_distributed
from ecg_dml.pretrain import fit_pretrain, pretrain
dev = init_distributed()                       # this process's device (a world of 1 makes no group by itself)
dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
t = torch.ones(3, device=dev); dist.all_reduce(t)
print(f'RESULT backend {dist.get_backend()}, world {dist.get_world_size()}, all_reduce {t.tolist()} on {dev}')
learn = pretrain(sample_dir(), method='dml', epochs=1, bs=32, out=sys.argv[1], overwrite=True, progress=False, fit=False)
learn.loss_func.loss = GatherLoss(learn.loss_func.loss)
learn.add_cb(distributed_trainer(device=learn.dls.device))
from fastai.callback.core import Callback
class Seen(Callback):                          # the model as the training loop sees it (unwrapped again after fit)
    order, kind = 99, None
    def before_batch(self): Seen.kind = type(self.learn.model).__name__
learn.add_cb(Seen())
fit_pretrain(learn)
print(f'RESULT trained one epoch as {Seen.kind}, loss {learn.recorder.values[-1][0]:.4f}')
assert Seen.kind == 'DistributedDataParallel', Seen.kind
EOF
step ddp "$PY" -m torch.distributed.run --nproc_per_node 1 --master_addr 127.0.0.1 --master_port $((29500 + RANDOM % 1000)) \
  "$OUT/ddp_smoke.py" "$OUT/ddp_run"

cat "$REPORT.steps" "$REPORT.details" > "$REPORT"; rm -f "$REPORT.steps" "$REPORT.details"
printf '\nfinished %s; %d step(s) failed\n' "$(date -u +%FT%TZ)" "$FAILED" >> "$REPORT"
echo "device_check: report in $REPORT ($FAILED failed)" >&2
exit $FAILED
