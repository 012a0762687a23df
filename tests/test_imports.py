"The public surface and the layering: package names import lazily and correctly; domain packages use only core; evaluation reads encoders without the training stack"
import ast, importlib, pkgutil, subprocess, sys
from pathlib import Path
import pytest
import ecg_dml

PACKAGES = ['models', 'data', 'metric', 'augment', 'evaluate']
DOMAIN = ['models', 'data', 'metric', 'augment']          # may import ecg_dml.core and their own package only
TRAINING = {'ecg_dml.pretrain', 'ecg_dml.learner', 'ecg_dml.methods', 'ecg_dml.views', 'ecg_dml.distributed'}
LIB = Path(ecg_dml.__file__).parent

def _python(code:str) -> str:
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

@pytest.mark.parametrize('pkg', PACKAGES)
def test_package_names_resolve_to_their_submodules(pkg):
    m = importlib.import_module(f'ecg_dml.{pkg}')
    subs = {s.name for s in pkgutil.iter_modules(m.__path__)}
    assert m.__all__ and len(set(m.__all__)) == len(m.__all__)
    assert not set(m.__all__) & subs, 'a package name that is also a submodule would be shadowed once it is imported'
    for name in m.__all__:
        sub = next(k for k, names in m._FROM.items() if name in names)
        src = importlib.import_module(f'ecg_dml.{pkg}.{sub}')
        assert name in src.__all__ and getattr(m, name) is getattr(src, name), name
    assert set(m.__all__) <= set(dir(m))
    with pytest.raises(AttributeError, match='has no attribute'): getattr(m, 'no_such_name')

def test_from_imports_and_star_imports():
    out = _python("from ecg_dml.models import create_encoder, load_encoder, save_encoder, EmbeddingModel\n"
                  "from ecg_dml.data import open_ecgs, build_store, ECGStore, scan_wfdb, read_record, ptbxl_index\n"
                  "from ecg_dml.evaluate import evaluate, embed_dataset, handcrafted_features\n"
                  "from ecg_dml.metric import *; from ecg_dml.augment import *\n"
                  "print(create_encoder.__module__, evaluate.__module__, NTXent.__module__, ThreeKG.__module__)")
    assert out.split() == ['ecg_dml.models.heads', 'ecg_dml.evaluate.run', 'ecg_dml.metric.contrastive',
                           'ecg_dml.augment.vcg']

def test_package_imports_are_light():
    "`import ecg_dml.data` imports none of its submodules; all of its names together pull in no vision stack"
    out = _python("import sys, ecg_dml.data as d\n"
                  "print(sorted(m for m in sys.modules if m.startswith('ecg_dml.')))\n"
                  "[getattr(d, n) for n in d.__all__]\n"
                  "print(sorted(m for m in ('fastai.vision', 'torchvision', 'fastai.learner') if m in sys.modules))")
    first, second = out.splitlines()
    assert first == "['ecg_dml.data']" and second == '[]'

def test_evaluation_does_not_import_the_training_stack(tmp_path):
    "protocols (and reading an encoder file through it) never import pretrain, the learner or the methods"
    out = _python("import sys\n"
                  "import ecg_dml.evaluate.protocols as P\n"
                  "from ecg_dml.models import create_encoder, save_encoder\n"
                  f"p = save_encoder(create_encoder('xresnet1d18'), {str(tmp_path/'run'/'encoder.pth')!r}, "
                  "{'encoder': 'xresnet1d18', 'n_leads': 12})\n"
                  "label, enc, factory, cfg = P.resolve_encoder(p.parent)\n"
                  "print(label, sorted(m for m in sys.modules if m.startswith('ecg_dml.')))")
    label, mods = out.split(' ', 1)
    assert label == 'run'
    assert not TRAINING & set(ast.literal_eval(mods)), mods

def _ecg_dml_imports(py:Path) -> set[str]:
    "Absolute names of the ecg_dml modules `py` imports (relative imports resolved)"
    pkg = '.'.join(py.relative_to(LIB.parent).with_suffix('').parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(py.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = '.'.join(pkg.split('.')[:len(pkg.split('.')) - node.level + 1])
            else: base = ''
            name = '.'.join(p for p in (base, node.module or '') if p)
            if name.startswith('ecg_dml'): out.add(name)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith('ecg_dml')}
    return out

@pytest.mark.parametrize('pkg', DOMAIN)
def test_domain_packages_import_only_core_and_themselves(pkg):
    for py in sorted((LIB/pkg).glob('*.py')):
        bad = {m for m in _ecg_dml_imports(py) if m not in ('ecg_dml.core', 'ecg_dml') and not m.startswith(f'ecg_dml.{pkg}')}   # ecg_dml: its _lazy_exports
        assert not bad, f'{py.name} imports {bad}'

def test_models_io_imports_only_core_and_models():
    assert _ecg_dml_imports(LIB/'models'/'io.py') <= {'ecg_dml.core', 'ecg_dml.models.heads'}
    for py in sorted((LIB/'evaluate').glob('*.py')):
        assert not TRAINING & _ecg_dml_imports(py), py.name
