"""Evaluation: metrics.py (numbers), plots.py (curves, confusion, bars), grid.py (image grids),
report.py (everything for one evaluated model, written to a folder).

Import the submodule you need; nothing is re-exported here so that importing the metrics
does not pull in matplotlib, nor the image grid scikit-learn.
"""
