"""Evaluation: metrics, the evaluate stage, feature maps and the results tables."""
