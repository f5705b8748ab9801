"""What a study writes, shared by the package that writes it (`study`) and the one that reads it
(`analysis`): file and column names, status values and phases (`contract`), where the files live
(`storage`: a folder or a bucket), how they are written (`files`), the spec and study.json read back
(`spec_data`, `state`), W&B run names (`wandb_names`), whether W&B has an API key here
(`wandb_key`), and two pieces of command-line plumbing (`errors`, `pipes`).

The layers, bottom up (an import only ever points down):

    studyfiles    pandas, pyarrow, pyyaml; no torch, no ray
    trainables    torch: models, data, the training loop
    analysis      pandas, scipy, plotly: tables in, answers out
    study         ray, optuna, wandb: the spec, the launcher, the tables

    python -m pytest tests/test_layers.py
"""
