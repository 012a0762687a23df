"""Helpers the benchmark scripts share: Markdown tables of DataFrames and the CPU model (the package's own helpers --
`ecg_dml.core.versions`, `ecg_dml.core.atomic_write` -- are imported from it, not restated here)."""
from __future__ import annotations
import platform
from pathlib import Path
import numpy as np, pandas as pd

def md_table(df:pd.DataFrame, floatfmt:str='.3g', empty:str='_(no rows)_') -> str:
    """A Markdown pipe table of `df` (its index too when named): floats formatted with `floatfmt` (a format spec such as
    '.3g' or '.3f'), missing values blank, `|` in text escaped; `empty` for a frame without rows"""
    if not len(df): return empty
    d = df.reset_index() if any(n is not None for n in df.index.names) else df
    def cell(v) -> str:
        if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)): return ''
        if isinstance(v, (float, np.floating)): return format(v, floatfmt)
        return str(v).replace('|', '\\|').replace('\n', ' ')
    rows = ['| ' + ' | '.join(map(cell, r)) + ' |' for r in d.itertuples(index=False)]
    return '\n'.join(['| ' + ' | '.join(map(str, d.columns)) + ' |', '|' + '---|' * d.shape[1]] + rows)

def cpu_model() -> str:
    "The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)"
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'unknown'
