"""Judging a representation: `evaluate()` runs the protocols (linear probe, frozen MLP, finetune, scratch) over
label fractions, seeds and folds beside a random-init baseline, with bootstrap CIs, retrieval and subgroups, as one
`EvalConfig` says, on the built-in PTB-XL tasks or any `Target` of a user's own table (patient-grouped folds); `EvalResults` holds what it measured; embeddings and handcrafted ECG features for comparison;
`embed_folder`, embeddings of any ECG folder in one call.

Each name is defined in the submodule it is listed under and imported on first use: `import ecg_dml.evaluate` costs
nothing, `from ecg_dml.evaluate import evaluate` imports `ecg_dml.evaluate.run` (and what it needs) only."""
# Hand-written: nbdev generates the submodules from nbs/, never this file (it only creates missing __init__.py).
from ecg_dml import _lazy_exports

_FROM = {  # submodule -> the public names it defines
    'protocols': ['EvalConfig', 'linear_probe', 'run_protocol', 'TASK_KINDS', 'PROTOCOLS', 'FRACTIONS'],
    'targets':   ['Target', 'as_target', 'target_values', 'patient_folds', 'split_folds', 'EvaluateError'],
    'run':       ['evaluate'],
    'results':   ['EvalResults', 'load_results', 'merge_results', 'plot_learning_curves'],
    'embed':     ['embed_dataset', 'Embeddings', 'plot_embedding_map'],
    'metrics':   ['bootstrap_metrics', 'paired_bootstrap', 'retrieval_metrics'],
    'subgroups': ['subgroup_metrics', 'forest_plot'],
    'features':  ['handcrafted_features', 'feature_matrix'],
    'inference': ['embed_folder', 'write_embeddings'],
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _FROM)
