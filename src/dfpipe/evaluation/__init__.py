"""Evaluation: the evaluate stage, the FF++ protocol, feature maps and the results tables."""
