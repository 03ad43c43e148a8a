"""Evaluation metrics (CMMD, FID, KID, CLIP score) land with issue #6."""
