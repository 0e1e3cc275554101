"""Data stages: plain functions from data and parameters to new data.

One module per stage (dataset, generate, load_csv, split, normalise, evaluate).
Only ``load_csv`` reads a file; nothing here imports mlflow or Hydra.
"""
