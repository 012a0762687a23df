# Sphinx configuration of the ecg_dml documentation site. The sources are not here: scripts/build_docs.py writes
# them (one MyST notebook per nbs/ notebook, already executed) into docs/_build/src and runs
# `sphinx-build -W -c docs docs/_build/src docs/_build/html`. Build with `make docs`.
import json, sys
from configparser import ConfigParser
from pathlib import Path

_repo = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_repo/'scripts'))
_cfg = ConfigParser(); _cfg.read(_repo/'settings.ini')
_s = _cfg['DEFAULT']

project = _s['title']
author = _s['author']
copyright = _s['copyright']
release = version = _s['version']

extensions = ['myst_nb']
nb_execution_mode = 'off'            # scripts/build_docs.py executed the notebooks (execnb, cached)
nb_output_stderr = 'show'            # warnings a cell printed stay visible on the page, as in the notebook
nb_merge_streams = True
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3
# anchors as Quarto makes them, which nbdev's symbol links (`data.store.html#ecgstore.get_batch`) expect
myst_heading_slug_func = 'build_docs.quarto_slug'
exclude_patterns = ['_sources.json', '**.ipynb_checkpoints']
root_doc = 'index'
language = 'en'
highlight_language = 'python3'

html_theme = 'furo'
html_title = f"{project} {release}"
html_short_title = project
html_static_path = [str(_repo/'docs'/'_static')]
html_css_files = ['ecg_dml.css']
html_copy_source = False
html_show_sourcelink = False
html_baseurl = f"{_s.get('doc_host', '').rstrip('/')}{_s.get('doc_baseurl', '')}/"
html_theme_options = {'top_of_page_buttons': ['view'], 'navigation_with_keys': True}

# Each page's "view source" button points at its notebook in the repository (nbs/NN_name.ipynb, branch of
# settings.ini), not at the generated file Sphinx read.
_git = _s.get('git_url', '').rstrip('/')
_branch = _s.get('branch', 'main')

def _source_link(app, pagename, templatename, context, doctree):
    src = json.loads((Path(app.srcdir)/'_sources.json').read_text()).get(pagename)
    if src and _git: context['theme_source_view_link'] = f"{_git}/blob/{_branch}/{src}"

def setup(app):
    app.connect('html-page-context', _source_link)
