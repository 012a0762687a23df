"benchmarks/device_check.sh, the GPU check users run, runs end to end here with --cpu and writes its report"
import os, re, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

def test_device_check_cpu(tmp_path):
    env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(['bash', str(REPO/'benchmarks'/'device_check.sh'), '--cpu', '--out', str(tmp_path/'dc')],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=1500)
    report = (tmp_path/'dc'/'report.md').read_text()
    assert r.returncode == 0, report[-4000:] + r.stderr[-3000:]
    for step in ('env', 'tests', 'amp', 'perf', 'ddp'):
        assert re.search(rf'^\| {step} \| passed \| \d+ \|$', report, re.M), step
    # every method trained in fp32, fp16 and bf16 with finite losses; the DDP run ran as one process of a group
    assert len(re.findall(r'^RESULT (dml|simclr) (fp32|fp16|bf16): loss [\d.]+ .* finite=True', report, re.M)) == 6
    assert re.search(r'RESULT backend gloo, world 1, all_reduce \[1.0, 1.0, 1.0\]', report) and 'RESULT trained one epoch as' in report
    assert (tmp_path/'dc'/'perf'/'step.csv').exists() and (tmp_path/'dc'/'ddp_run'/'encoder.pth').exists()
    # a wrong option is refused
    r = subprocess.run(['bash', str(REPO/'benchmarks'/'device_check.sh'), '--gpu'], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and 'unknown option --gpu' in r.stderr
