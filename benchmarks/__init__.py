"""Benchmarks and studies of ecg_dml: scripts, not part of the installed package.

Run them from the repository root, either way:

    python benchmarks/study.py --quick --out /tmp/study_quick
    python -m benchmarks.study --quick --out /tmp/study_quick

The scripts import the package's own helpers (`ecg_dml.core.versions`, `ecg_dml.core.atomic_write`) and each other:
as modules of this package when imported (`python -m benchmarks.study`, or `from benchmarks import study` in the
tests, whose pytest.ini puts the repository root on sys.path), as top-level modules when run as a file (Python puts
the script's folder first on sys.path). Nothing here edits sys.path."""
