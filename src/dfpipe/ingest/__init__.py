"""Ingest: raw sources, video sampling, face detection/segmentation and the preprocessing stage."""
