"""Training: data loading, losses, the train/evaluate loop and the train stage's fit()."""
