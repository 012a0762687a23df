"""Build the documentation site from nbs/ (`make docs`): every notebook a page, with the API reference of every
exported function and class (nbdev's `show_doc`), plots included.

nbdev renders its site with Quarto, which cannot be installed here. This builds the same site with Sphinx + myst-nb
(what Jupyter Book 1.x wraps) in three steps:

1. **execute** each notebook once, top to bottom, with nbdev's own docs processors around the run (front matter,
   a `show_doc` cell after every exported symbol, `#| hide` / `#| export` removal, backtick links). Cells are skipped
   as `nbdev_test` skips them (flags from settings.ini `tst_flags`, `#| eval: false`), with the repository first on
   `sys.path` as `nbdev_test` puts it — so `make test` runs this instead of `nbdev_test`. One fresh process per notebook,
   `--jobs` at a time; results are cached in docs/_build/exec, keyed by the notebook, every file of the package,
   settings.ini, the nbdev/execnb versions and EXEC_VERSION below. A failing cell fails the build, naming the cell.
2. **convert** what is left of Quarto into plain MyST notebooks in docs/_build/src: the front-matter cell becomes the
   title, `show_doc` output (which starts with `---`, a transition docutils rejects) becomes a plain markdown section,
   `#| echo/output/include` become myst-nb tags, callouts become admonitions, links to the configured doc site become
   links Sphinx resolves and checks (heading anchors are made as Quarto makes them, so nbdev's `#ecgstore.get_batch`
   style anchors hold). Pages are named as nbdev names them (`04_data.store.ipynb` -> `data.store.html`); the index
   gets the toctree, in notebook order, in sections by the notebooks' tens digit.
3. **sphinx-build -W** (warnings are errors) with docs/conf.py and execution off, into docs/_build/html.

Usage: python scripts/build_docs.py [--jobs 2] [--force] [--cached] [--keep-going] [--timeout 600] [--no-sphinx]
"""
import argparse, hashlib, json, os, re, subprocess, sys, time, traceback
from concurrent.futures import ProcessPoolExecutor, TimeoutError, as_completed
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO/'docs'/'_build'
# Bump when step 1 (execution + nbdev processing) changes, so cached executions are redone.
EXEC_VERSION = '3'
# Sidebar sections by the notebooks' tens digit (00-09 data, 10-19 augmentation, ...); anything else goes under 'More'.
SECTIONS = {0: 'Core and data', 1: 'Augmentations and views', 2: 'Models', 3: 'Metric learning', 4: 'Training',
            5: 'Evaluation', 9: 'Tutorials'}

class NotebookError(Exception):
    "A notebook cell failed while building the docs (the message names the notebook and cell, with the traceback)"

# ---------------------------------------------------------------- step 1: execute + nbdev processors (worker side)

def _config():
    from nbdev.config import get_config
    return get_config(path=REPO)

def _execute_proc(skip_flags, timeout):
    """A nbdev processor that runs the notebook's cells in order in one execnb shell, as `nbdev_test` does, plus the
    `show_doc` cells nbdev added (it replaces nbdev's `exec_show_docs`, which runs only exports and imports).
    A `show_doc` that fails where nbdev put it (right after the export) is run again after the last cell: a signature
    may name a class defined further down (`-> ECGStore`), which a string annotation only resolves then."""
    from execnb.shell import CaptureShell
    from nbdev.process import Processor
    class execute_nb(Processor):
        def begin(self):
            self.k, self.deferred = CaptureShell(self.nb.path_, timeout=timeout), []
            self.k.run_cell('from nbdev.showdoc import show_doc')
        def _fail(self, cell):
            name = Path(self.nb.path_).name
            raise NotebookError(f'{name}: cell {cell.idx_} failed:\n{cell.source}\n\n' + self.k.prettytb(fname=name))
        def __call__(self, cell):
            if cell.cell_type != 'code' or not cell.source or 'nbdev_export'+'(' in cell.source: return
            d = cell.directives_ or {}
            if d.get('eval:', [''])[0].lower() == 'false' or skip_flags & d.keys(): return
            self.k.cell(cell)
            if self.k.exc:
                if getattr(cell, 'has_sd', False): self.deferred.append(cell)
                else: self._fail(cell)
        def end(self):
            for cell in self.deferred:
                self.k.cell(cell)
                if self.k.exc: self._fail(cell)
    return execute_nb

def exec_notebook(src, dst, timeout=600):
    "Run nbdev's docs processors on notebook `src` with a full execution in the middle; write the result to `dst`"
    import nbdev.processors as P
    from execnb.nbio import read_nb, write_nb
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    os.environ['IN_TEST'] = '1'
    cfg = _config()
    if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))   # this checkout's package first, as nbdev_test does
    src, dst = Path(src), Path(dst)
    nb = read_nb(src)
    skip_flags = set(cfg.get('tst_flags', '').split())
    # nbdev's FilterDefaults order, with the execution where `exec_show_docs` was; processors that act on outputs
    # or hide lines come after it; `insert_warning` and `add_fold` (Quarto only) are left out. A notebook whose front
    # matter says `skip_exec: true` is not run (as `nbdev_test` skips it): nbdev's `exec_show_docs` renders its API.
    fm = getattr(NBProcessor(nb=read_nb(src), procs=[P.FrontmatterProc], process=True).nb, 'frontmatter_', {})
    run = P.exec_show_docs if str(fm.get('skip_exec', '')).lower() == 'true' else _execute_proc(skip_flags, timeout)
    procs = [P.FrontmatterProc, P.populate_language, P.add_show_docs, P.rm_header_dash, P.clean_show_doc,
             run, P.strip_ansi, P.hide_line, P.filter_stream_, P.rm_export,
             P.ai_magics, P.clean_magics, P.hide_, P.add_links, P.mv_exports, P.strip_hidden_metadata]
    skip = set(cfg.get('skip_procs', '').split(','))
    procs = [p for p in procs if getattr(p, '__name__', '') not in skip]
    t = time.time()
    with working_directory(src.parent): NBProcessor(nb=nb, procs=procs, process=True)
    nb.metadata['ecg_dml_docs'] = {'exec_seconds': round(time.time() - t, 1)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)
    return time.time() - t

def _run_one(src, dst, timeout):
    "Worker entry point: returns (seconds, None) or (None, error text)"
    try: return exec_notebook(src, dst, timeout), None
    except NotebookError as e: return None, str(e)
    except Exception: return None, traceback.format_exc()

# ---------------------------------------------------------------- step 2: convert to plain MyST notebooks

def page_name(nb_path):
    "nbdev's page name of a notebook: number prefix dropped, lower case (`04_data.store.ipynb` -> `data.store`)"
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', Path(nb_path).name.lower()).rsplit('.ipynb', 1)[0]

def _src(cell):
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else (s or '')

def _front_matter(text):
    import yaml
    m = re.match(r'^\s*---\s*\n(.*?)\n---\s*$', text, re.S)
    return (yaml.safe_load(m.group(1)) or {}) if m else None

_re_callout = re.compile(r'^:::+\s*\{\.callout-(\w+)[^}]*\}\s*$', re.M)
_CALLOUTS = {'note': 'note', 'tip': 'tip', 'warning': 'warning', 'caution': 'caution', 'important': 'important'}

_re_attr_link = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{[^}]*\}')

_re_fence = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)

def _unlink_code(md):
    "nbdev links backticked names inside code blocks too (show_doc's argument comments): there they would show raw"
    return _re_fence.sub(lambda m: re.sub(r'\[(`[^`\]]+`)\]\([^)\s]*\)', r'\1', m.group(0)), md)

def _md(text):
    "Quarto/nbdev markdown -> MyST: callouts to admonitions, pandoc link attributes dropped, no links in code"
    text = _unlink_code(text)
    text = _re_callout.sub(lambda m: ':::{' + _CALLOUTS.get(m.group(1), 'note') + '}', text)
    # pandoc's link attributes (`[source](url){target="_blank" ...}`, show_doc's source link) -> an HTML link
    return _re_attr_link.sub(lambda m: f'<a class="sd-source" href="{m.group(2)}" target="_blank">{m.group(1)}</a>', text)

_re_heading = re.compile(r'^#{1,6} +(.+?)\s*$', re.M)

def _anchors(nb):
    "The heading anchors of a converted notebook (as `quarto_slug` makes them from the heading's text)"
    out = set()
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        for h in _re_heading.findall(_strip_fences(c['source'])):
            out.add(quarto_slug(re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', h).replace('`', '')))
    return out

def _strip_fences(md): return _re_fence.sub('', md)

def resolve_links(nbs, doc_url, files=None, left_out=()):
    """Links to pages of this site (nbdev's `add_links` writes `{doc_url}data.store.html#build_store`) -> links to
    the page's notebook, which Sphinx resolves and checks. nbdev links methods defined inside a class body, which
    get no `show_doc` section of their own: those go to the class (`ecgstore.get_batch` -> `ecgstore`), and other
    unknown anchors to the page. Links to pages that are not in this build stay absolute links to the doc site."""
    anchors = {name: _anchors(nb) for name, nb in nbs.items()}
    pre = re.escape(doc_url) if doc_url else ''
    rx = re.compile(rf'\]\((?P<url>(?P<abs>{pre})?(?P<page>[\w.-]+)\.html(?:#(?P<anc>[^)\s]*))?)\)' if pre else
                    r'\]\((?P<url>(?P<abs>)(?P<page>[\w.-]+)\.html(?:#(?P<anc>[^)\s]*))?)\)')
    def fix(m):
        page, anc = m.group('page'), m.group('anc')
        if page in left_out and doc_url and not m.group('abs'): return f"]({doc_url}{m.group('url')})"
        if page not in anchors: return m.group(0)
        if anc and anc not in anchors[page]: anc = anc.split('.')[0] if anc.split('.')[0] in anchors[page] else None
        return f'](/{page}.ipynb' + (f'#{anc}' if anc else '') + ')'
    # links between notebooks by file name (`[store](04_data.store.ipynb#build_store)`) work too
    files = files or {}
    rx_nb = re.compile(r'\]\((?:\./)?(?P<file>[\w.-]+\.ipynb)(?P<anc>#[^)\s]*)?\)')
    def fix_nb(m):
        f = m.group('file')
        return f']({files[f]}.html{m.group("anc") or ""})' if f in files else m.group(0)
    for nb in nbs.values():
        for c in nb['cells']:
            if c['cell_type'] == 'markdown': c['source'] = rx.sub(fix, rx_nb.sub(fix_nb, c['source']))

def _show_doc_md(md, level):
    """`show_doc` markdown (`---`, source link, `### name`, signature, docstring, arguments table) -> a MyST section:
    no `---`, the heading at `level`, the source link moved below the heading (so it belongs to this section)"""
    md = re.sub(r'^\s*---\s*\n', '', md)
    m = re.search(r'^#+ .*$', md, re.M)
    if not m: return md
    before = md[:m.start()].strip()
    return f"{'#' * level} {m.group(0).lstrip('#').strip()}\n\n" + (before + '\n\n' if before else '') + md[m.end():].lstrip()

_re_slug_drop = re.compile(r'[^\w\s.-]')

def quarto_slug(title):
    "Heading anchor as pandoc/Quarto makes it (and nbdev's links expect): `ECGStore.get_batch` -> `ecgstore.get_batch`"
    s = _re_slug_drop.sub('', title.strip().lower())
    s = re.sub(r'\s+', '-', s)
    return re.sub(r'^[^a-z_]+', '', s)

def convert(nb, src_rel, cfg):
    "A processed notebook (dict) -> a plain MyST notebook (dict) for myst-nb"
    src_url = f"{cfg.git_url.rstrip('/')}/blob/{cfg.get('branch', 'main')}/{src_rel}" if cfg.get('git_url') else None
    out, level = [], 1
    for cell in nb['cells']:
        s, ct = _src(cell), cell['cell_type']
        if ct == 'raw':
            fm = _front_matter(s)
            if fm is None: continue    # other raw cells are Quarto-specific output: not shown
            md = f"# {fm.get('title', page_name(src_rel))}\n"
            if fm.get('description'): md += f"\n> {fm['description']}\n"
            if src_url: md += f'\n<p class="nb-source"><a href="{src_url}">Source notebook: <code>{src_rel}</code></a></p>\n'
            out.append({'cell_type': 'markdown', 'metadata': {}, 'source': md}); continue
        if ct == 'markdown':
            s = _md(s).strip()
            if not s: continue
            levels = [len(m) for m in re.findall(r'^(#+) ', s, re.M)]
            if levels: level = levels[-1]
            out.append({'cell_type': 'markdown', 'metadata': {}, 'source': s}); continue
        # code cells: nbdev removed the notebook's own directive lines; those left are the ones its processors
        # added (show_doc cells get `#| output: asis` and `#| echo: false`).
        lines = s.splitlines()
        dirs = dict(re.match(r'#\|\s*([\w-]+)\s*:?\s*(.*)', l).groups() for l in lines if re.match(r'#\|\s*[\w-]+', l))
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        outs = cell.get('outputs', [])
        if dirs.get('include', '').lower() == 'false': continue
        if dirs.get('output', '').lower() == 'asis' or code.startswith('show_doc('):
            md = '\n\n'.join(''.join(o['data']['text/markdown']) if isinstance(o['data']['text/markdown'], list)
                             else o['data']['text/markdown'] for o in outs if 'text/markdown' in o.get('data', {}))
            if md.strip():
                out.append({'cell_type': 'markdown', 'metadata': {},
                            'source': _md(_show_doc_md(md, min(level + 1, 3)))})
            continue
        tags = []
        if dirs.get('echo', '').lower() == 'false': tags.append('remove-input')
        if dirs.get('output', '').lower() == 'false': tags.append('remove-output')
        if not code and not outs: continue
        if not code: tags.append('remove-input')
        out.append({'cell_type': 'code', 'metadata': {'tags': tags} if tags else {}, 'source': code,
                    'outputs': outs, 'execution_count': None})
    md = {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
          'language_info': {'name': 'python', 'pygments_lexer': 'ipython3'}}
    return {'cells': out, 'metadata': md, 'nbformat': 4, 'nbformat_minor': 5}

def _toctree(pages):
    "Toctrees in notebook order, one per section (by the notebooks' tens digit)"
    blocks, cur = [], None
    for nb_path, name in pages:
        m = re.match(r'^(\d)\d*_', Path(nb_path).name)
        sec = SECTIONS.get(int(m.group(1)), 'More') if m else 'More'
        if sec != cur: blocks.append((sec, [])); cur = sec
        blocks[-1][1].append(name)
    return '\n\n'.join('```{toctree}\n:hidden:\n:caption: ' + sec + '\n\n' + '\n'.join(names) + '\n```'
                       for sec, names in blocks)

# ---------------------------------------------------------------- driver

def notebooks(nbs):
    "All notebooks under `nbs` in sidebar order: index first, then by path (nbdev's glob: no `_` or `.` names)"
    from nbdev.doclinks import nbglob
    nbsl = sorted(Path(p) for p in nbglob(nbs, func=Path))
    return sorted(nbsl, key=lambda p: (p.stem != 'index', str(p.relative_to(nbs))))

def _digest(paths, extra=b''):
    h = hashlib.sha256(extra)
    for p in paths: h.update(str(p).encode()); h.update(Path(p).read_bytes())
    return h.hexdigest()

def execute_all(nbs, cache, jobs, force, timeout, stale_ok=False, keep_going=False):
    "Step 1 for every notebook whose inputs changed since its cached run"
    cfg = _config()
    lib = REPO/cfg.lib_path
    pkg = sorted(p for p in lib.rglob('*') if p.is_file() and '__pycache__' not in p.parts and p.suffix != '.pyc')
    import execnb, nbdev
    common = _digest(pkg + [REPO/'settings.ini'], f'{EXEC_VERSION} {nbdev.__version__} {execnb.__version__}'.encode())
    todo, keys = [], {}
    for nb in nbs:
        rel = nb.relative_to(REPO/cfg.nbs_path)
        keys[nb] = _digest([nb], common.encode())
        dst, key = cache/rel, (cache/rel).with_suffix('.key')
        if force or not dst.exists() or not key.exists(): todo.append(nb)
        elif key.read_text() != keys[nb] and not stale_ok: todo.append(nb)
    print(f'docs: {len(nbs)} notebooks, {len(nbs) - len(todo)} cached, executing {len(todo)} with {jobs} jobs', flush=True)
    times, errors = {}, {}
    if todo:
        ctx = get_context('spawn')
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=1) as ex:
            futs = {ex.submit(_run_one, str(nb), str(cache/nb.relative_to(REPO/cfg.nbs_path)), timeout): nb for nb in todo}
            try:
                for f in as_completed(futs, timeout=timeout * len(todo) / jobs + 60):   # a backstop: cells time out
                    nb = futs[f]; secs, err = f.result()
                    if err: errors[nb] = err; print(f'  failed    {nb.relative_to(REPO)}', flush=True); continue
                    times[nb] = secs
                    (cache/nb.relative_to(REPO/cfg.nbs_path)).with_suffix('.key').write_text(keys[nb])
                    print(f'  {secs:6.1f} s  {nb.relative_to(REPO)}', flush=True)
            except TimeoutError:
                for f, nb in futs.items():
                    if not f.done(): errors[nb] = 'did not finish within the time limit'; f.cancel()
                for p in list(getattr(ex, '_processes', {}).values()): p.kill()
    for nb, e in errors.items(): print(f'\ndocs: {nb.relative_to(REPO)} failed:\n{e}', file=sys.stderr)
    if errors and not keep_going: sys.exit(f'docs: {len(errors)} notebook(s) failed to execute')
    return times, errors

def _write_if_changed(path, text):
    "Write only when the content changes, so that Sphinx rebuilds only the pages that did"
    if not path.exists() or path.read_text(encoding='utf-8') != text: path.write_text(text, encoding='utf-8')

def convert_all(nbs, cache, src, html, left_out=()):
    "Step 2: write the MyST notebooks and the toctree into `src`"
    import nbformat
    cfg = _config()
    nbs_path = REPO/cfg.nbs_path
    src.mkdir(parents=True, exist_ok=True)
    pages = [(nb, page_name(nb.relative_to(nbs_path))) for nb in nbs]
    names = [n for _, n in pages]
    dup = {n for n in names if names.count(n) > 1}
    if dup: sys.exit(f'docs: several notebooks map to the same page name: {sorted(dup)}')
    if 'index' not in names: sys.exit('docs: nbs/index.ipynb is missing (it is the home page)')
    sources, out = {}, {}
    for nb, name in pages:
        rel = nb.relative_to(nbs_path)
        d = json.loads((cache/rel).read_text(encoding='utf-8'))
        sources[name] = str(nb.relative_to(REPO))
        out[name] = convert(d, sources[name], cfg)
    out['index']['cells'].append({'cell_type': 'markdown', 'metadata': {},
                                  'source': _toctree([p for p in pages if p[1] != 'index'])})
    doc_url = f"{cfg.get('doc_host', '').rstrip('/')}{cfg.get('doc_baseurl', '').rstrip('/')}/"
    resolve_links(out, None if doc_url == '/' else doc_url, {nb.name: name for nb, name in pages},
                  {page_name(nb) for nb in left_out})
    for name, d in out.items():
        for i, c in enumerate(d['cells']): c['id'] = f'c{i:03d}'
        nbformat.validate(nbformat.from_dict(d))
        _write_if_changed(src/f'{name}.ipynb', json.dumps(d, indent=1, ensure_ascii=False) + '\n')
    for p in src.glob('*.ipynb'):       # pages of notebooks that are gone (their old HTML goes with them)
        if p.stem not in out: p.unlink(); (html/f'{p.stem}.html').unlink(missing_ok=True)
    _write_if_changed(src/'_sources.json', json.dumps(sources, indent=1) + '\n')
    return pages

def sphinx(src, html):
    # -E -a: a fresh environment every time (about 10 s): every page's sidebar is rebuilt when notebooks come or go
    cmd = [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-E', '-a', '-q', '-b', 'html', '-c', str(REPO/'docs'),
           '-d', str(BUILD/'doctrees'), str(src), str(html)]
    print('docs: ' + ' '.join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--jobs', type=int, default=2, help='notebooks executed at once (one process each)')
    p.add_argument('--force', action='store_true', help='execute every notebook, ignoring the cache')
    p.add_argument('--cached', action='store_true',
                   help='reuse cached executions even when the notebook or package changed since (work on the docs tooling)')
    p.add_argument('--keep-going', action='store_true',
                   help='leave notebooks that fail out of the site, build the rest, and exit non-zero at the end')
    p.add_argument('--timeout', type=int, default=600, help='seconds a cell may run (and a notebook, on average)')
    p.add_argument('--no-sphinx', action='store_true', help='stop after writing docs/_build/src')
    a = p.parse_args()
    t0 = time.time()
    cfg = _config()
    nbs = notebooks(REPO/cfg.nbs_path)
    _, errors = execute_all(nbs, BUILD/'exec', a.jobs, a.force, a.timeout, a.cached, a.keep_going)
    left_out, nbs = list(errors), [nb for nb in nbs if nb not in errors]
    t1 = time.time()
    convert_all(nbs, BUILD/'exec', BUILD/'src', BUILD/'html', left_out)
    if not a.no_sphinx:
        try: sphinx(BUILD/'src', BUILD/'html')
        except subprocess.CalledProcessError as e: sys.exit(f'docs: sphinx-build failed (exit {e.returncode})')
    t2 = time.time()
    if not a.no_sphinx: print(f'docs: built {BUILD/"html"/"index.html"} in {t2 - t0:.0f} s '
          f'(execute {t1 - t0:.0f} s, convert + sphinx {t2 - t1:.0f} s)')
    if errors: sys.exit(f'docs: {len(errors)} notebook(s) failed and were left out: '
                        + ', '.join(str(nb.relative_to(REPO)) for nb in errors))

if __name__ == '__main__': main()
