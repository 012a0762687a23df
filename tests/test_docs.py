"""The documentation site (`make docs`), opened in headless Chromium.

The session fixture builds the site with scripts/build_docs.py (notebook executions are cached, so after `make docs`
this is only the conversion and Sphinx, a few seconds; from scratch it executes every notebook) and serves
docs/_build/html on localhost. Chromium and ChromeDriver are Debian's (`make docs-deps` installs them); selenium
drives them, nothing is downloaded. Screenshots go to docs/_build/screenshots.
"""
import functools, http.server, os, re, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import urlopen
import pytest
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]
HTML = REPO/'docs'/'_build'/'html'
SHOTS = REPO/'docs'/'_build'/'screenshots'
CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=1400,1000',
         '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1']   # hermetic: only the local server answers

sys.path.insert(0, str(REPO/'scripts'))
from build_docs import notebooks, page_name  # noqa: E402  the page names and order the site must have

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address): pass   # the browser dropping a connection is not an error here

@pytest.fixture(scope='session')
def site():
    """Build the site (cached executions are reused) and serve it; yields the base URL.
    ECG_DML_DOCS_PREBUILT=1 tests the site already in docs/_build/html instead (`make docs-test` builds it first)."""
    if os.environ.get('ECG_DML_DOCS_PREBUILT') == '1':
        assert (HTML/'index.html').exists(), f'ECG_DML_DOCS_PREBUILT=1 but {HTML} has no site: run `make docs`'
    else:
        r = subprocess.run([sys.executable, str(REPO/'scripts'/'build_docs.py')], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, f'docs build failed:\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}'
    srv = _Server(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(HTML)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown(); srv.server_close()

@pytest.fixture(scope='session')
def browser():
    for exe in (CHROMIUM, CHROMEDRIVER):
        assert Path(exe).exists(), f'{exe} is missing: `make docs-deps` installs Debian\'s chromium and chromium-driver'
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='ecg_dml_chromium_')
    o = Options(); o.binary_location = CHROMIUM
    for f in FLAGS + [f'--user-data-dir={profile}']: o.add_argument(f)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)   # an explicit driver: selenium downloads nothing
    d.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield d
    d.quit(); shutil.rmtree(profile, ignore_errors=True)

def _pages():
    "(notebook, page name) of every notebook in nbs/, in sidebar order"
    return [(nb, page_name(nb)) for nb in notebooks(REPO/'nbs')]

def _css(d, sel): return d.find_elements('css selector', sel)

def _article_text(d): return d.execute_script("return document.querySelector('article').innerText")   # fast, as rendered

def _scroll_to(d, el):
    d.execute_script("arguments[0].scrollIntoView({block: 'start', behavior: 'instant'})", el); time.sleep(0.3)

def _wait(cond, timeout=20):
    t = time.time()
    while time.time() - t < timeout:
        if (v := cond()): return v
        time.sleep(0.2)
    return cond()

def test_index_renders(site, browser):
    browser.get(site + 'index.html')
    assert 'ecg_dml' in browser.title
    text = _article_text(browser)
    assert text.startswith('ecg_dml'), text[:200]
    for s in ('Install', 'pip install ecg-dml', 'make demo', 'make test', 'Quick start', 'PTB-XL'): assert s in text, s
    # the quick start ran: its printed output is on the page, below its code
    assert re.search(r'\d+ records; \(1000, 12\) samples x leads at 100 Hz', text), text
    assert 'nbs/index.ipynb' in _css(browser, 'p.nb-source a')[0].get_attribute('href')
    browser.save_screenshot(str(SHOTS/'index.png'))

def test_api_page(site, browser):
    "data.store's page has build_store's API reference: heading, signature with its documented arguments, docstring"
    browser.get(site + 'data.store.html#build_store')
    sec = browser.execute_script("const e = document.getElementById('build_store'); return e && e.closest('section')")
    assert sec is not None, 'no build_store section on data.store.html'
    text = sec.text
    assert text.splitlines()[0].startswith('build_store'), text[:200]
    assert 'def build_store(' in text and 'source:pd.DataFrame' in text and 'shard_size:int=4096' in text, text[:800]
    assert 'index of ECGs: one row per record' in text                      # a docments argument comment
    assert 'Convert `source` into a sharded, memory-mapped store' in text.replace('\n', ' ') or \
           'Convert source into a sharded, memory-mapped store' in text.replace('\n', ' ')
    src = [a.get_attribute('href') for a in sec.find_elements('css selector', 'a.sd-source')]
    assert src and re.search(r'/blob/main/ecg_dml/data/store\.py#L\d+$', src[0]), src
    _scroll_to(browser, sec)
    browser.save_screenshot(str(SHOTS/'api_build_store.png'))
    # the class and its documented members are there too, with anchors as nbdev links them
    for anchor in ('ecgstore', 'validate_store', 'storeerror'): assert browser.find_elements('id', anchor), anchor

def test_sidebar_lists_every_notebook_in_order(site, browser):
    browser.get(site + 'index.html')
    links = _css(browser, '.sidebar-tree a.reference')
    hrefs = [urlsplit(a.get_attribute('href')).path.lstrip('/') for a in links]
    want = [f'{name}.html' for _, name in _pages() if name != 'index']
    assert hrefs == want, (hrefs, want)

def test_every_page_renders_cleanly(site, browser):
    "Every sidebar page answers 200 and shows its title, no raw directives/front matter/show_doc residue, and links"
    pages = _pages()
    for i, (nb, name) in enumerate(pages):
        url = site + f'{name}.html'
        with urlopen(url) as r: assert r.status == 200, url
        browser.get(url)
        text = _article_text(browser)
        h1 = _css(browser, 'article h1')
        assert len(h1) == 1 and h1[0].text.strip(), f'{name}: one title expected'
        lines = [l.strip() for l in text.splitlines()]
        assert not [l for l in lines if l.startswith('#|')], f'{name}: raw `#|` directive shown'
        assert '---' not in lines, f'{name}: raw front matter or show_doc `---` shown'
        assert not [l for l in lines if l.startswith(':::')], f'{name}: a raw callout fence (:::) shown'
        title = h1[0].text.strip()
        fm = [l for l in lines if l.startswith('output-file:') or l in (f'title: {title}', f'title: "{title}"')]
        assert not fm, f'{name}: front matter shown: {fm}'
        assert 'AUTOGENERATED' not in text and '{target=' not in text, name
        assert not re.search(r'\]\((https?:|/)[^)\s]*\)', text), f'{name}: raw markdown link shown'
        assert 'Traceback (most recent call last)' not in text, f'{name}: a cell shows an error'
        src = _css(browser, 'p.nb-source a')
        assert src and src[0].get_attribute('href').endswith(f'/blob/main/{nb.relative_to(REPO).as_posix()}'), name
        view = _css(browser, '.view-this-page a')
        assert view and view[0].get_attribute('href') == src[0].get_attribute('href'), name
        # previous / next follow the notebook order
        nxt = _css(browser, 'a.next-page'); prv = _css(browser, 'a.prev-page')
        if i + 1 < len(pages): assert nxt and nxt[0].get_attribute('href').endswith(f'/{pages[i + 1][1]}.html'), name
        else: assert not nxt, name
        if i > 0: assert prv and prv[0].get_attribute('href').endswith(f'/{pages[i - 1][1]}.html'), name

def test_internal_links_and_anchors_resolve():
    "Every relative link of every page (API links between modules included) names a file that exists and an id on it"
    ids, links = {}, []
    for f in HTML.glob('*.html'):
        soup = BeautifulSoup(f.read_text(encoding='utf-8'), 'html.parser')
        ids[f.name] = {t['id'] for t in soup.find_all(id=True)}
        links += [(f.name, a['href']) for a in soup.find_all('a', href=True)]
    assert len(ids) >= len(_pages()) + 2   # the pages, search.html, genindex.html
    bad = []
    for page, href in links:
        u = urlsplit(href)
        if u.scheme or href.startswith(('mailto:', '//')): continue
        target = u.path or page
        if u.path and not (HTML/u.path).exists(): bad.append((page, href)); continue
        if u.fragment and target.endswith('.html') and u.fragment not in ids.get(target, ()): bad.append((page, href))
    assert not bad, bad[:20]
    assert len({p for p, h in links if h == 'data.store.html#ecgstore'}) >= 2   # API links across pages (nbdev's)

def test_plots_are_images(site, browser):
    "Matplotlib figures are on the pages as loaded images (data.loaders' 12-lead plot)"
    browser.get(site + 'data.loaders.html')
    imgs = _css(browser, 'article .cell_output img')
    assert imgs, 'no plot on data.loaders'
    assert all(browser.execute_script('return arguments[0].complete && arguments[0].naturalWidth > 100', i) for i in imgs)
    _scroll_to(browser, imgs[0])
    browser.save_screenshot(str(SHOTS/'plot_data_loaders.png'))

def test_tutorial_page(site, browser):
    "The WFDB tutorial shows its scan table (with the broken record's reason), its plots, and is under Tutorials"
    browser.get(site + 'tutorial.your_wfdb.html')
    text = _article_text(browser)
    assert text.startswith('Bring your own WFDB folder')
    assert 'data file 00012_lr.dat is truncated' in text
    assert len(_css(browser, 'article .cell_output table')) >= 2          # the scan table, the store's table
    imgs = _css(browser, 'article .cell_output img')
    assert len(imgs) >= 3 and all(browser.execute_script('return arguments[0].naturalWidth > 100', i) for i in imgs)
    caps = [c.text for c in _css(browser, '.sidebar-tree p.caption')]
    assert caps[-1].lower() == 'tutorials', caps
    _scroll_to(browser, imgs[0])
    browser.save_screenshot(str(SHOTS/'tutorial_your_wfdb.png'))

def test_ptbxl_tutorial_page(site, browser):
    "The end-to-end tutorial is the first tutorial and shows what it ran: pretraining log, results tables, plots"
    pages = [name for _, name in _pages()]
    assert pages.index('tutorial.ptbxl') == min(i for i, n in enumerate(pages) if n.startswith('tutorial.')), pages
    browser.get(site + 'tutorial.ptbxl.html')
    text = _article_text(browser)
    assert text.startswith('End to end on PTB-XL'), text[:200]
    # the callout became an admonition (rendered as a box, not as `:::` text)
    adm = _css(browser, 'article .admonition')
    assert adm and 'not enough to tell whether pretraining helps' in adm[0].text, [a.text[:100] for a in adm]
    # its outputs: the pretraining log, the summary with both encoders, the paired differences
    tables = [t.text for t in _css(browser, 'article .cell_output table')]
    assert any('knn_auroc' in t and 'train_loss' in t for t in tables), 'no pretraining log table'
    assert any('pretrained' in t and 'random-init' in t and 'superdiagnostic' in t for t in tables), 'no summary table'
    assert any('p_value' in t and 'diff' in t for t in tables), 'no paired-difference table'
    assert re.search(r'pretraining \d+ s, evaluation \d+ s', text), 'the timing line is missing'
    assert re.search(r'\d+ of \d+ paired 95 % intervals', text)
    # the full-PTB-XL cell is shown as code (eval: false), without output
    assert "cv='standard'" in text and 'ecg_dml_evaluate --encoder runs/dml/encoder.pth' in text
    imgs = _css(browser, 'article .cell_output img')
    assert len(imgs) >= 3 and all(browser.execute_script('return arguments[0].naturalWidth > 100', i) for i in imgs)
    _scroll_to(browser, imgs[1])
    browser.save_screenshot(str(SHOTS/'tutorial_ptbxl.png'))

def test_search(site, browser):
    "The search page finds build_store's section (the index is built and loads)"
    browser.get(site + 'search.html?q=build_store')
    found = _wait(lambda: [a.get_attribute('href') for a in _css(browser, '#search-results a')
                           if 'data.store.html' in (a.get_attribute('href') or '')])
    browser.save_screenshot(str(SHOTS/'search.png'))
    assert found, _css(browser, '#search-results')[0].text[:500]
    assert (HTML/'searchindex.js').stat().st_size > 10_000
