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

def test_ecg_dml_evaluate_holdout_on_a_wfdb_folder(tmp_path):
    "the evaluate CLI on the bundled sample's WFDB files: one holdout split (folds 9 + 10 test, 8 validates)"
    import pandas as pd
    from ecg_dml.core import sample_dir
    db = pd.read_csv(sample_dir()/'ptbxl_database.csv')
    r = subprocess.run([str(BIN/'ecg_dml_evaluate'), '--data', str(sample_dir()), '--out', str(tmp_path/'ev'),
                        '--tasks', 'norm_vs_abnormal', '--fractions', '1', '--cv', 'holdout', '--test_folds', '9,10',
                        '--valid_folds', '8', '--n_boot', '50', '--plots', 'false', '--allow_flat', 'true'],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    R = pd.read_csv(tmp_path/'ev'/'results.csv')
    assert set(R.fold) == {0, 9} and R.query('fold == 0 and metric == "auroc"').n_test.max() == db.strat_fold.isin([9, 10]).sum()
