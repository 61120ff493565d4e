"""The `evaluate` command: which model (`embedders`), the training-set compactness, the command itself.

The evaluation building blocks (pair sets, protocol, statistics, plots, `evaluate_sets`) are in
`evaluation/`.
"""
