"""Operator-time predictors fitted to GPU kernel profiles."""
