"""The `evaluate` command: which model (`embedders`) and the command itself; the training-set compactness
it reports is `evaluation.train_compactness`, which `distill` reports too.

The evaluation building blocks (pair sets, protocol, statistics, plots, `evaluate_sets`) are in
`evaluation/`.
"""
