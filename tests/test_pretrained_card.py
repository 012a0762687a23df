"""The shipped encoder's model card is produced by the committed script and reproduces: a short-budget run of
benchmarks/pretrained/train.py registers an encoder whose card `--reproduce` re-measures exactly, the training is
deterministic (a second run writes the same weights), and the card shipped in the package is re-measured from its
weights on the real PTB-XL test folds."""
import json, subprocess, sys
from pathlib import Path
import pytest
from ecg_dml.models.pretrained import DEFAULT_MODEL, file_sha256, pretrained_names, pretrained_root, read_card

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO/'benchmarks'/'pretrained'/'train.py'

def _run(*args, check=True):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                       timeout=1800)
    if check: assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

@pytest.fixture(scope='module')
def quick(shared, tmp_path_factory):
    "A short-budget run of the script (real PTB-XL folds 1-8, a few dozen steps) registered in a temporary registry"
    d = tmp_path_factory.mktemp('pretrained')
    _run('--work', d/'work', '--quick', '--registry', d/'registry', '--threads', 1)
    return d

def test_script_card_states_the_run(quick):
    card = read_card(quick/'registry'/DEFAULT_MODEL)
    res = card['results']
    assert {r['model'] for r in res} == {DEFAULT_MODEL, 'random-init', 'handcrafted',
                                         f'{DEFAULT_MODEL} minus random-init (paired)', f'{DEFAULT_MODEL} minus handcrafted (paired)'}
    assert {(r['task'], r['labels']) for r in res} == {(t, l) for t in ('superdiagnostic', 'age') for l in ('100%', '10%')}
    for r in res:
        assert r['ci_low'] <= r['value'] <= r['ci_high'], r
        assert r['n_test'] > 400   # folds 9-10 of the 1,987 records
    assert card['training']['license'] == 'CC BY 4.0' and 'folds 1-8' in card['training']['records']
    assert card['budget']['script'] == 'benchmarks/pretrained/train.py' and card['budget']['steps'] > 0
    assert (quick/'registry'/DEFAULT_MODEL/'card.md').read_text().count(DEFAULT_MODEL) >= 3

def test_reproduce_matches_the_card_and_detects_a_changed_number(quick, tmp_path):
    r = _run('--work', tmp_path/'w1', '--quick', '--registry', quick/'registry', '--reproduce', '--threads', 1)
    assert 'largest difference from the card: 0' in r.stdout
    # a card whose number was edited by hand is caught (a copy of the registry with one value changed)
    import shutil
    reg = tmp_path/'reg'; shutil.copytree(quick/'registry', reg)
    f = reg/DEFAULT_MODEL/'card.json'; card = json.loads(f.read_text())
    card['results'][0]['value'] += 0.01
    f.write_text(json.dumps(card))
    r = _run('--work', tmp_path/'w2', '--quick', '--registry', reg, '--reproduce', '--threads', 1, check=False)
    assert r.returncode == 1 and 'largest difference from the card: 0.01' in r.stdout

def test_training_is_deterministic(quick, tmp_path):
    _run('--work', tmp_path/'work', '--quick', '--registry', tmp_path/'registry', '--threads', 1)
    a, b = (read_card(d/DEFAULT_MODEL) for d in (quick/'registry', tmp_path/'registry'))
    assert a['weights']['sha256'] == b['weights']['sha256']
    assert a['results'] == b['results']

@pytest.mark.skipif(DEFAULT_MODEL not in pretrained_names(), reason='no pretrained encoder registered in the package yet')
def test_shipped_card_reproduces_from_its_weights(shared, tmp_path):
    "The numbers in the shipped card are re-measured from the shipped weights on folds 9-10 (to 1e-3)"
    card = read_card(pretrained_root()/DEFAULT_MODEL)
    assert card['budget']['script'] == 'benchmarks/pretrained/train.py'
    assert card['weights']['sha256'] == file_sha256(pretrained_root()/DEFAULT_MODEL/card['weights']['file'])
    assert card['weights']['bytes'] <= 5e6
    r = _run('--work', tmp_path/'work', '--reproduce', '--threads', 1, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
