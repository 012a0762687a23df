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

# The docs site's browser test needs the built site (building it executes every notebook), Sphinx and Chromium:
# `make test` and `make docs-test` build the site first and run it (ECG_DML_DOCS_TEST=1); a bare `pytest tests`
# leaves it out rather than executing every notebook from inside pytest.
collect_ignore = [] if os.environ.get('ECG_DML_DOCS_TEST') else ['test_docs.py']
