"""Make README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which is not available here).

The notebook is executed (execnb, as nbdev_test does; `#| eval: false` cells are shown, not run) so the README
shows real outputs; nbdev cell directives
(`#| ...`) are removed and `#| hide` cells dropped; nbconvert renders the markdown.

Usage: python scripts/make_readme.py nbs/index.ipynb README.md [--check]
"""
import argparse, sys
from pathlib import Path
import nbformat
from execnb.nbio import read_nb, nb2str
from nbconvert import MarkdownExporter
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory

HEADER = '<!-- Generated from nbs/index.ipynb by `make readme`; edit the notebook, not this file. -->\n\n'

def _directives(src):
    return [l[3:].strip() for l in src.splitlines() if l.startswith('#|')]

def render(nb_path):
    nb_path = Path(nb_path)
    nb = read_nb(nb_path)
    shell = CaptureShell(nb_path)
    skip = lambda c: c.cell_type == 'code' and any(d.replace(' ', '') == 'eval:false' for d in _directives(c.source))
    with working_directory(nb_path.parent): shell.run_all(nb, exc_stop=True, preproc=skip)
    out = nbformat.reads(nb2str(nb), as_version=4)  # joins execnb's line lists into strings
    cells = []
    for c in out.cells:
        if c.cell_type == 'code':
            d = _directives(c.source)
            if any(o.split()[0] in ('hide', 'export', 'exporti', 'default_exp') for o in d if o): continue
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip()
            if not c.source: continue
        cells.append(c)
    out.cells = cells
    out.metadata['language_info'] = {'name': 'python'}  # fenced code blocks get ```python
    body, _ = MarkdownExporter().from_notebook_node(out)
    lines = [l.rstrip() for l in body.strip().splitlines()]
    return HEADER + '\n'.join(lines) + '\n'

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('nb'); p.add_argument('out'); p.add_argument('--check', action='store_true')
    a = p.parse_args()
    md = render(a.nb)
    out = Path(a.out)
    if a.check:
        if not out.exists() or out.read_text(encoding='utf-8') != md:
            sys.exit(f'{out} is not what {a.nb} produces: run `make readme` and commit the result')
        print(f'{out} is up to date with {a.nb}')
    else:
        out.write_text(md, encoding='utf-8'); print(f'wrote {out}')

if __name__ == '__main__': main()
