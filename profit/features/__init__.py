"""Proof features (ProFIt, ICLR 2024): what a robustness proof uses at one layer, pruned to a
small sufficient set, with input-gradient maps of the kept features.

    pf = ProofFeatures.compute(net, x, labels, eps=0.02, domain="crown")
    pruned, curves, maps = pf.prune(), pf.topk(), pf.visualize(pf.prune())
    run = run_features(net, images, labels, FeatureRunOptions(eps=0.02))    # many images, CSV rows

`proof`: extraction, pruning, top-k, gradient maps; `runner`: batches, rows, summary, CSV.
Pictures are in `profit.viz.features`.
"""

from profit.features.proof import (
    PRIORITIES, FeatureError, FeatureMaps, ProofFeatures, PruneOptions, Pruned, TopK, feature_nodes, masked_network,
    resolve_layer,
)
from profit.features.runner import (
    CSV_COLUMNS, FeatureRun, FeatureRunOptions, Row, Summary, batches, rows, run_features, summarize, write_csv,
)

__all__ = [
    "CSV_COLUMNS", "FeatureError", "FeatureMaps", "FeatureRun", "FeatureRunOptions", "PRIORITIES", "ProofFeatures",
    "PruneOptions", "Pruned", "Row", "Summary", "TopK", "batches", "feature_nodes", "masked_network",
    "resolve_layer", "rows", "run_features", "summarize", "write_csv",
]
