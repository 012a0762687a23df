"Pretrained encoders (models.pretrained) and embeddings of any folder (evaluate.inference): registry, checksums, model cards, embed_folder on good and broken records, input checks, the ecg_dml_embed CLI"
import importlib.util, json, re, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ecg_dml.core import LEADS, sample_dir
from ecg_dml.data.ptbxl import ptbxl_index
from ecg_dml.data.wfdb import read_record
from ecg_dml.models.heads import InputError, create_encoder, embed
from ecg_dml.models.io import CheckpointError, load_encoder, save_encoder
import ecg_dml.models.pretrained as P
from ecg_dml.models.pretrained import (DEFAULT_MODEL, PTBXL_SOURCE, PretrainedError, card_markdown, file_sha256,
                                       list_pretrained, load_pretrained, pretrained_names, write_pretrained)
from ecg_dml.evaluate.embed import Embeddings, embed_dataset
from ecg_dml.evaluate.inference import embed_folder, resolve_model, write_embeddings

BIN = Path(sys.executable).parent
CFG = {'encoder': 'xresnet1d18', 'n_leads': 12, 'fs': 100.0, 'seconds': 10.0}
FACTS = dict(summary='test encoder (untrained)', training={**PTBXL_SOURCE, 'records': 0}, method={'name': 'none'},
             budget={'steps': 0}, commit='test', results=[])

@pytest.fixture(scope='module')
def encoder():
    torch.manual_seed(0)
    return create_encoder('xresnet1d18').eval()

@pytest.fixture(scope='module')
def real():
    "Six real PTB-XL ECGs of the bundled sample [6, 12, 1000] mV at 100 Hz"
    return np.stack([read_record(p).signal for p in ptbxl_index(sample_dir()).path[:6]])

@pytest.fixture(scope='module')
def registry(encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp('registry')
    write_pretrained(encoder, FACTS, config=CFG, root=root)
    return root

@pytest.fixture(scope='module')
def run(encoder, tmp_path_factory):
    "A run folder holding the same encoder, with the config a pretraining run writes"
    d = tmp_path_factory.mktemp('run')
    save_encoder(encoder, d/'encoder.pth', {**CFG, 'method': 'dml', 'epochs': 0})
    return d

# ---- the registry ----

def test_good_weights_load_and_give_the_saved_encoders_outputs(registry, encoder, real):
    enc, card = load_pretrained(root=registry, device='cpu')
    assert not enc.training and card['name'] == DEFAULT_MODEL
    torch.testing.assert_close(embed(enc, real), embed(encoder, real), rtol=0, atol=1e-6)
    folder = registry/DEFAULT_MODEL
    assert sorted(p.name for p in folder.iterdir()) == ['card.json', 'card.md', 'encoder.pth']
    assert [p.name for p in registry.iterdir()] == [DEFAULT_MODEL]            # no temporary folder left
    assert card == json.loads((folder/'card.json').read_text())
    assert card['weights']['sha256'] == file_sha256(folder/'encoder.pth')
    want = {'leads': list(LEADS), 'units': 'mV', 'fs': 100.0, 'seconds': 10.0, 'n_samples': 1000, 'shape': [12, 1000],
            'min_seconds': 5.0}
    assert {k: card['input'][k] for k in want} == want and 'first 10 s' in card['input']['crop']
    assert card['architecture'] == {'encoder': 'xresnet1d18', 'n_leads': 12, 'encoder_kw': {}, 'n_features': 128,
                                    'n_params': sum(p.numel() for p in encoder.parameters())}
    row = list_pretrained(registry).iloc[0]
    assert (row['name'], row.encoder, row.fs, row.seconds, row.license, row.leads) == (DEFAULT_MODEL, 'xresnet1d18', 100.0, 10.0, 'CC BY 4.0', 12)

def test_tampered_weights_are_refused_with_both_checksums_and_never_loaded(registry, tmp_path, monkeypatch):
    bad = tmp_path/'reg'; shutil.copytree(registry, bad)
    w = bad/DEFAULT_MODEL/'encoder.pth'
    want = json.loads((bad/DEFAULT_MODEL/'card.json').read_text())['weights']['sha256']
    b = bytearray(w.read_bytes()); b[len(b)//2] ^= 0x10; w.write_bytes(bytes(b))
    calls = []
    monkeypatch.setattr(P, 'load_encoder', lambda *a, **k: calls.append(a))
    with pytest.raises(PretrainedError) as e: load_pretrained(root=bad)
    msg = str(e.value)
    assert str(w) in msg and 'checksum mismatch' in msg and want in msg and file_sha256(w) in msg and want != file_sha256(w)
    assert calls == [] and isinstance(e.value, CheckpointError)
    w.unlink()
    with pytest.raises(PretrainedError, match='weights file .* is missing'): load_pretrained(root=bad)

def test_a_card_that_disagrees_with_its_weights_is_refused(registry, tmp_path):
    bad = tmp_path/'reg'; shutil.copytree(registry, bad)
    f = bad/DEFAULT_MODEL/'card.json'
    card = json.loads(f.read_text()); card['input']['fs'] = 500.0; f.write_text(json.dumps(card))
    with pytest.raises(PretrainedError, match=r"fs: card 500.0, weights 100.0"): load_pretrained(root=bad)
    f.write_text('{not json')
    with pytest.raises(PretrainedError, match='unreadable model card'): load_pretrained(root=bad)

def test_unknown_names_and_an_empty_registry(registry, tmp_path):
    with pytest.raises(PretrainedError, match=f'no pretrained encoder named .ecg_dml-ptbxl-resnet1d50. .*known: {DEFAULT_MODEL}'):
        load_pretrained('ecg_dml-ptbxl-resnet1d50', root=registry)
    with pytest.raises(PretrainedError, match='holds none .*has no pretrained weights'): load_pretrained(root=tmp_path/'empty')
    assert list_pretrained(tmp_path/'empty').empty and pretrained_names(tmp_path/'empty') == []
    assert P.pretrained_root() == Path(P.__file__).parent.parent/'pretrained'   # the package's own registry

def test_write_pretrained_refuses_incomplete_facts_and_configs(encoder, registry, tmp_path):
    for facts, cfg, match in [({**FACTS, 'training': {'data': 'PTB-XL'}}, CFG, 'license and attribution'),
                              ({k: v for k, v in FACTS.items() if k != 'results'}, CFG, 'lack results'),
                              ({**FACTS, 'weights': {}}, CFG, 'derived'),
                              (FACTS, {'encoder': 'xresnet1d18', 'n_leads': 12}, 'no fs or seconds'),
                              (FACTS, {**CFG, 'n_leads': 8}, 'of another shape')]:
        with pytest.raises(ValueError, match=match): write_pretrained(encoder, facts, 'x', cfg, tmp_path/'r')
    assert pretrained_names(tmp_path/'r') == [] and not [p for p in (tmp_path/'r').iterdir()]
    with pytest.raises(FileExistsError, match='overwrite=True'): write_pretrained(encoder, FACTS, config=CFG, root=registry)
    with pytest.raises(ValueError, match='letters, digits'): write_pretrained(encoder, FACTS, '../up', CFG, tmp_path/'r')

def test_a_short_pretraining_run_becomes_a_pretrained_folder(real, tmp_path):
    "the training script's path: pretrain -> run folder -> write_pretrained -> load_pretrained"
    from ecg_dml.pretrain import pretrain
    x = np.stack([read_record(p).signal for p in ptbxl_index(sample_dir()).path[:32]])
    pretrain(x, encoder='xresnet1d18', epochs=1, bs=16, out=tmp_path/'run', progress=False, probe=False, device='cpu')
    results = pd.DataFrame([{'task': 'superdiagnostic', 'metric': 'macro AUROC', 'model': 'pretrained', 'value': 0.8123,
                             'ci_low': 0.79, 'ci_high': 0.83, 'n_test': 497}])
    folder = write_pretrained(tmp_path/'run', {**FACTS, 'results': results, 'limitations': {'note': 'two steps'}},
                              name='tiny', root=tmp_path/'reg')
    enc, card = load_pretrained('tiny', root=tmp_path/'reg', device='cpu')
    run_enc, cfg = load_encoder(tmp_path/'run', device='cpu')
    torch.testing.assert_close(embed(enc, real), embed(run_enc, real), rtol=0, atol=0)
    assert card['input']['fs'] == cfg['fs'] == 100.0 and card['results'][0]['n_test'] == 497
    md = (folder/'card.md').read_text()
    assert md == card_markdown(card) and md.startswith('# tiny\n')
    for s in ('| superdiagnostic | macro AUROC | pretrained | 0.8123 | 0.79 | 0.83 | 497 |', 'CC BY 4.0',
              'doi:10.1038/s41597-020-0495-6', '## Limitations', card['weights']['sha256'], "load_pretrained('tiny')"):
        assert s in md, s

# ---- embed_folder ----

def _copy(src:Path, folder:Path, new:str, edit=lambda t: t) -> Path:
    (folder/f'{new}.dat').write_bytes(src.with_suffix('.dat').read_bytes())
    (folder/f'{new}.hea').write_text(edit(src.read_text().replace(src.stem, new)))
    return folder/new

def _names(f):
    return lambda t: re.sub(r'(?m)^(\S+\.dat .* )(\S+)$', lambda m: m[1] + f(m[2]), t)

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "12 records of the sample; a truncated data file, a header without V6, a flat lead, records of 7 s and 3 s; lead names in lower, upper and swapped case"
    d = tmp_path_factory.mktemp('ecgs')/'my_ecgs'; (d/'sub').mkdir(parents=True)
    src = sorted((sample_dir()/'records100').rglob('*.hea'))[:12]
    for s in src: shutil.copy(s, d/'sub'/s.name); shutil.copy(s.with_suffix('.dat'), d/'sub'/s.with_suffix('.dat').name)
    src = sorted((d/'sub').glob('*.hea'))
    _copy(src[0], d, 'truncated').with_suffix('.dat').write_bytes(src[0].with_suffix('.dat').read_bytes()[:4000])
    _copy(src[1], d, 'no_v6', lambda t: re.sub(r' V6$', ' X', t, flags=re.M))
    _copy(src[2], d, 'lower', _names(str.lower))
    _copy(src[3], d, 'upper', _names(str.upper))
    _copy(src[4], d, 'mixed', _names(lambda n: n.swapcase()))
    flat = _copy(src[5], d, 'flat')
    x = np.fromfile(flat.with_suffix('.dat'), '<i2').reshape(-1, 12); x[:, 7] = 0; x.tofile(flat.with_suffix('.dat'))
    for name, n in (('short7', 700), ('short3', 300)):       # shorter records, complete: header and data agree
        r = _copy(src[6], d, name, lambda t: t.replace(' 12 100 1000', f' 12 100 {n}', 1))
        r.with_suffix('.dat').write_bytes(r.with_suffix('.dat').read_bytes()[:n * 12 * 2])
    return d

def test_embed_folder_embeds_the_good_and_gives_reasons_for_the_bad(folder, run, encoder):
    emb, skipped = embed_folder(folder, model=run, n_workers=0, device='cpu', progress=False)
    n_seen = len(list(folder.rglob('*.hea')))
    assert len(emb) + len(skipped) == n_seen == 20 and emb.attrs['n_skipped'] == len(skipped)
    why = skipped.set_index('record').reason
    assert sorted(why.index) == ['flat', 'no_v6', 'short3', 'truncated'] and len(emb) == 16
    assert 'truncated' in why['truncated'] and why['no_v6'].startswith('missing lead(s) V6') and 'flat' in why['flat'].lower()
    assert 'lasts 3 s, less than' in why['short3']
    assert set(skipped.path) == {str(folder/n) for n in why.index}
    assert list(emb.columns[:4]) == ['ecg_id', 'patient_id', 'record', 'path'] and emb.shape[1] == 4 + 128
    assert emb.attrs['fs'] == 100.0 and emb.attrs['seconds'] == 10.0 and emb['ecg_id'].is_unique
    e = emb.set_index('record').filter(like='emb_')
    src = sorted(p.stem for p in (folder/'sub').glob('*.hea'))
    for copy, orig in (('lower', src[2]), ('upper', src[3]), ('mixed', src[4])):   # lead names: case does not matter
        np.testing.assert_allclose(e.loc[copy], e.loc[f'sub/{orig}'], rtol=0, atol=1e-6)
    x = np.stack([read_record(folder/'sub'/s).signal for s in src[6:9]])
    np.testing.assert_allclose(e.loc[[f'sub/{s}' for s in src[6:9]]].to_numpy(), embed(encoder, x).numpy(), atol=1e-5)
    padded = np.concatenate([x[0, :, :700], np.zeros((12, 300), np.float32)], axis=1)[None]   # 7 s: zeros after its end
    np.testing.assert_allclose(e.loc['short7'].to_numpy(), embed(encoder, padded).numpy()[0], atol=1e-5)
    kept, _ = embed_folder(folder, model=run, allow_flat=True, n_workers=0, device='cpu', progress=False)
    assert len(kept) == 17 and 'flat' in set(kept.record)

def test_embed_folder_by_pretrained_name_equals_the_run(folder, registry, run):
    a, _ = embed_folder(folder, model=DEFAULT_MODEL, root=registry, n_workers=0, device='cpu', progress=False)
    b, _ = embed_folder(folder, model=str(run/'encoder.pth'), n_workers=0, device='cpu', progress=False)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6)
    assert a.attrs['model'] == DEFAULT_MODEL

def test_500_hz_input_is_resampled_by_embed_folder_and_refused_by_embed(run, encoder, tmp_path):
    emb, skipped = embed_folder(sample_dir()/'records500', model=run, n_workers=0, device='cpu', progress=False)
    assert (len(emb), len(skipped)) == (10, 0)
    lr = [sample_dir()/'records100'/p.replace('_hr', '_lr') for p in emb.record]
    x100 = np.stack([read_record(p).signal for p in lr])
    ref = embed(encoder, x100).numpy()
    got = emb.filter(like='emb_').to_numpy()
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.95, cos                       # resampled 500 Hz ~ PTB-XL's own 100 Hz file of the same ECG
    enc, cfg = load_encoder(run, device='cpu')
    x500 = np.stack([read_record(p).signal for p in emb.path])
    assert x500.shape[1:] == (12, 5000)
    with pytest.raises(InputError, match=r'takes ECGs of \[12 leads, 1000 samples\] \(10 s at 100 Hz\); got \[12, 5000\]'):
        embed(enc, x500, config=cfg)
    with pytest.raises(InputError, match='at 500 Hz'): embed(enc, x100, config=cfg, fs=500)
    with pytest.raises(InputError, match='got \\[12, 5000\\]'): embed_dataset(enc, x500, config=cfg)
    assert embed(enc, x500).shape == (10, 128)          # without a config nothing is checked (as before)
    from ecg_dml.data.sources import open_ecgs       # a 500 Hz store is refused, not resampled
    st, _ = open_ecgs(sample_dir()/'records500', dest=tmp_path/'st500', fs=500, n_workers=0, progress=False)
    with pytest.raises(InputError, match='at 500 Hz.*embedded as it is'): embed_folder(st, model=run, device='cpu', progress=False)
    with pytest.raises(InputError, match='at 500 Hz'): embed_dataset(enc, st, config=cfg)

def test_models_it_cannot_use_and_folders_without_a_usable_record(run, encoder, folder, tmp_path):
    with pytest.raises(InputError, match="does not say the fs and seconds"):
        embed_folder(folder, model=(encoder, {'encoder': 'xresnet1d18'}), progress=False)
    with pytest.raises(TypeError, match=r'model=\(encoder, config\)'): resolve_model(encoder)
    with pytest.raises(PretrainedError, match='has no pretrained weights|known:'): resolve_model('no-such-model')
    with pytest.raises(CheckpointError, match='no such encoder file'): resolve_model(str(tmp_path/'none'/'encoder.pth'))
    bad = tmp_path/'bad'; bad.mkdir()
    for n in ('truncated', 'no_v6'):
        for ext in ('hea', 'dat'): shutil.copy(folder/f'{n}.{ext}', bad/f'{n}.{ext}')
    emb, skipped = embed_folder(bad, model=run, n_workers=0, device='cpu', progress=False)
    assert len(emb) == 0 and sorted(skipped.record) == ['no_v6', 'truncated'] and emb.shape[1] == 4 + 128

def test_write_embeddings_formats(folder, run, tmp_path):
    emb, skipped = embed_folder(folder, model=run, n_workers=0, device='cpu', progress=False)
    X = emb.filter(like='emb_').to_numpy(np.float32)
    write_embeddings(emb, tmp_path/'e.csv', skipped)
    back = pd.read_csv(tmp_path/'e.csv')
    assert list(back.columns) == list(emb.columns) and np.allclose(back.filter(like='emb_'), X, atol=1e-6)
    assert pd.read_csv(tmp_path/'e.skipped.csv').record.tolist() == skipped.record.tolist()
    write_embeddings(emb, tmp_path/'e.npz')
    E = Embeddings.load(tmp_path/'e.npz')
    assert np.array_equal(E.values, X) and np.array_equal(E.ids, emb.ecg_id) and E.info['fs'] == 100.0
    if importlib.util.find_spec('pyarrow') is None and importlib.util.find_spec('fastparquet') is None:
        with pytest.raises(ValueError, match='needs the pyarrow package'): write_embeddings(emb, tmp_path/'e.parquet')
    else:
        write_embeddings(emb, tmp_path/'e.parquet')
        assert np.allclose(pd.read_parquet(tmp_path/'e.parquet').filter(like='emb_'), X)

# ---- the console script ----

def _cli(*args):
    return subprocess.run([str(BIN/'ecg_dml_embed'), *map(str, args)], capture_output=True, text=True, timeout=600)

def test_cli_writes_csv_and_npy_and_prints_the_counts(folder, run, tmp_path):
    for out in (tmp_path/'emb.csv', tmp_path/'npy'/'emb.npy'):
        r = _cli(folder, '--model', run, '--out', out, '--device', 'cpu', '--n_workers', '0')
        assert r.returncode == 0, r.stderr[-2000:]
        sk = out.with_name('emb.skipped.csv')
        assert r.stdout.strip().splitlines()[-1] == f'16 embedded, 4 skipped (reasons in {sk})'
        assert sorted(pd.read_csv(sk).record) == ['flat', 'no_v6', 'short3', 'truncated']
    csv, npy = pd.read_csv(tmp_path/'emb.csv'), np.load(tmp_path/'npy'/'emb.npy')
    assert npy.shape == (16, 128) and np.allclose(csv.filter(like='emb_').to_numpy(), npy, atol=1e-6)
    assert pd.read_csv(tmp_path/'npy'/'emb.records.csv').record.tolist() == csv.record.tolist()
    table = pd.DataFrame({'path': [str(p.with_suffix('')) for p in sorted((folder/'sub').glob('*.hea'))[:3]]})
    table.to_csv(tmp_path/'table.csv', index=False)       # a table of records works too
    r = _cli(tmp_path/'table.csv', '--model', run, '--out', tmp_path/'t.npz', '--device', 'cpu', '--n_workers', '0')
    assert r.returncode == 0 and r.stdout.strip().endswith(f'3 embedded, 0 skipped (reasons in {tmp_path/"t.skipped.csv"})'), r.stderr

def test_cli_errors_are_one_line(folder, run, tmp_path):
    r = _cli(folder, '--model', tmp_path/'no_run', '--out', tmp_path/'e.csv')
    assert r.returncode == 1 and r.stderr.startswith('ecg_dml_embed: ') and 'no such encoder file' in r.stderr
    r = _cli(folder, '--model', run, '--out', tmp_path/'e.xlsx')
    assert r.returncode == 1 and '.csv, .parquet, .npy, .npz' in r.stderr and not (tmp_path/'e.skipped.csv').exists()
    if importlib.util.find_spec('pyarrow') is None and importlib.util.find_spec('fastparquet') is None:
        r = _cli(folder, '--model', run, '--out', tmp_path/'e.parquet')
        assert r.returncode == 1 and 'pip install pyarrow' in r.stderr
    r = _cli(folder, '--help')
    assert r.returncode == 0 and '--allow_flat' in r.stdout and '--model' in r.stdout
