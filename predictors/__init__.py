"""Operator-time predictors fitted to GPU kernel profiles (docs/predictors.md).

Profiles in one schema (``schema``) come from the installed aiconfigurator-core tables,
Frontier- and Vidur-format CSVs, or our profiler's directories (``sources``). Each
(GPU system, operator family) gets a forest over distributional features (``features``,
``fitting``), flattened for fast batched prediction (``forest``) and cached on disk
(``cache``); ``model.FittedCostModel`` serves the simulator and ``registry`` builds it
from a run's ``predictor`` config. Importing this package loads no model and no
scikit-learn.
"""
