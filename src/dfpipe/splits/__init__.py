"""Splits: identity groups, leak-free dataset variants and their leakage audit."""
