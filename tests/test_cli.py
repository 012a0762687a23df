"Console scripts run as installed, exit 0 and print real results"
import subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).parent

def test_ecg_dml_info():
    r = subprocess.run([str(BIN/'ecg_dml_info'), '--n_read', '30'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '250 PTB-XL records' in r.stdout and 'read 30 records with wfdb' in r.stdout
    assert 'torch' in r.stdout and 'wfdb' in r.stdout

def test_ecg_dml_info_help():
    r = subprocess.run([str(BIN/'ecg_dml_info'), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and 'n_read' in r.stdout
