"The wheel holds every subpackage and the sample data, and works when installed away from the source tree"
import os, subprocess, sys, zipfile
from pathlib import Path
import pytest

@pytest.fixture(scope='module')
def wheel(repo, tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(out),
                    str(repo)], check=True, cwd=out)
    whl = list(out.glob('ecg_dml-*.whl'))
    assert len(whl) == 1, whl
    return whl[0]

def test_wheel_contents(wheel, repo):
    names = set(zipfile.ZipFile(wheel).namelist())
    src_pkgs = {str(p.parent.relative_to(repo)) for p in (repo/'ecg_dml').rglob('__init__.py')}
    for pkg in src_pkgs: assert f'{pkg}/__init__.py' in names, f'subpackage {pkg} missing from the wheel'
    for mod in (repo/'ecg_dml').rglob('*.py'):
        if '__pycache__' not in mod.parts: assert str(mod.relative_to(repo)) in names, mod
    sample = [n for n in names if n.startswith('ecg_dml/sample_data/ptbxl/')]
    src_sample = [p for p in (repo/'ecg_dml'/'sample_data').rglob('*') if p.is_file()]
    assert len(sample) == len(src_sample) >= 500
    for f in ('ptbxl_database.csv', 'scp_statements.csv', 'LICENSE.txt', 'README.md', 'RECORDS'):
        assert f'ecg_dml/sample_data/ptbxl/{f}' in names
    src_pretrained = [p for p in (repo/'ecg_dml'/'pretrained').rglob('*') if p.is_file() and '__pycache__' not in p.parts]
    assert 'ecg_dml/pretrained/README.md' in names                          # the registry of pretrained encoders ships
    for p in src_pretrained: assert str(p.relative_to(repo)) in names, p   # ... with every encoder folder in it
    meta = [n for n in names if n.endswith('METADATA')][0]
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert 'Name: ecg-dml' in text and 'Requires-Dist: torch' in text
    assert not any('torchvision' in l for l in text.splitlines() if l.startswith('Requires-Dist'))
    assert wheel.stat().st_size < 12_000_000

def test_installed_wheel_finds_its_sample(wheel, tmp_path):
    "install the wheel (no deps) into a bare target dir and use it from outside the source tree"
    target = tmp_path/'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(wheel)],
                   check=True)
    code = ("import ecg_dml, ecg_dml.core as c; p = c.sample_dir(); "
            "assert str(p).startswith(%r), p; "
            "print(len(list((p/'records100').rglob('*.dat'))), ecg_dml.__version__)" % str(target))
    env = {**os.environ, 'PYTHONPATH': str(target)}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    n, version = r.stdout.split()
    assert int(n) == 250 and version
    assert (target/'bin'/'ecg_dml_info').exists()

def test_installed_wheel_embeds_a_wfdb_folder(wheel, tmp_path):
    "the wheel's ecg_dml_embed, away from the source tree, on the 500 Hz records its sample ships (resampled to the model's 100 Hz)"
    target = tmp_path/'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(wheel)],
                   check=True)
    env = {**os.environ, 'PYTHONPATH': str(target)}
    code = ("import ecg_dml.models.pretrained as P; from ecg_dml.models import create_encoder, save_encoder; "
            "assert str(P.pretrained_root()).startswith(%r); print(len(P.list_pretrained())); "
            "save_encoder(create_encoder('xresnet1d18'), 'run/encoder.pth', "
            "{'encoder': 'xresnet1d18', 'n_leads': 12, 'fs': 100.0, 'seconds': 10.0})" % str(target))
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = target/'ecg_dml'/'sample_data'/'ptbxl'/'records500'
    r = subprocess.run([str(target/'bin'/'ecg_dml_embed'), str(data), '--model', 'run', '--out', 'emb.csv',
                        '--device', 'cpu', '--n_workers', '0'], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == f'10 embedded, 0 skipped (reasons in emb.skipped.csv)'
    assert (tmp_path/'emb.csv').read_text().count('\n') == 11

def test_installed_wheel_ships_the_pretrained_encoder(wheel, tmp_path):
    "Only the wheel (away from the source tree, no ../shared): load_pretrained() verifies and loads the shipped encoder, "
    "ecg_dml_embed uses it by default on a WFDB folder, and a tampered copy of its weights is refused, never loaded"
    target = tmp_path/'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(wheel)],
                   check=True)
    env = {k: v for k, v in os.environ.items() if k != 'ECG_DML_SHARED'} | {'PYTHONPATH': str(target)}
    code = ("import shutil, torch; from pathlib import Path; import ecg_dml.models.pretrained as P\n"
            "assert str(P.pretrained_root()).startswith(%r), P.pretrained_root()\n"
            "enc, card = P.load_pretrained(device='cpu')\n"
            "assert card['name'] == P.DEFAULT_MODEL and not enc.training\n"
            "print(tuple(enc(torch.zeros(2, 12, 1000)).shape))\n"
            "shutil.copytree(P.pretrained_root(), 'reg')\n"
            "w = Path('reg')/P.DEFAULT_MODEL/'encoder.pth'; b = bytearray(w.read_bytes()); b[-100] ^= 1; w.write_bytes(bytes(b))\n"
            "try: P.load_pretrained(root='reg'); print('loaded')\n"
            "except P.PretrainedError as e: print('refused:', 'checksum mismatch' in str(e))\n") % str(target)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split('\n')[:2] == ['(2, 128)', 'refused: True'], r.stdout
    data = target/'ecg_dml'/'sample_data'/'ptbxl'/'records100'
    r = subprocess.run([str(target/'bin'/'ecg_dml_embed'), str(data), '--out', 'emb.npz', '--device', 'cpu',
                        '--n_workers', '0'], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'model ecg_dml-ptbxl-xresnet1d18' in r.stdout and '250 embedded, 0 skipped' in r.stdout, r.stdout
