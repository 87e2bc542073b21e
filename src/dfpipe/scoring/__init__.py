"""Scoring: metrics, resampling statistics and the Frank spectrum baseline, below both training and evaluation."""
