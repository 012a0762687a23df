import os
from pathlib import Path
import pytest
from ecg_dml.core import shared_data_dir

REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def shared():
    "The developers' data beside the repo (../shared/data); tests using it skip with a reason when it is absent"
    d = shared_data_dir()
    if d is None: pytest.skip('needs ../shared/data (or $ECG_DML_SHARED): the larger real data set is not here')
    return d

@pytest.fixture(scope='session')
def repo(): return REPO

# The docs site's browser test builds the whole site (it executes every notebook) and needs Sphinx and Chromium:
# it runs under `make docs-test` (ECG_DML_DOCS_TEST=1), not in the default suite, until `make test` builds the docs.
collect_ignore = [] if os.environ.get('ECG_DML_DOCS_TEST') else ['test_docs.py']
