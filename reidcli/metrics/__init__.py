"""Evaluation: distances, CMC/mAP/mINP, k-reciprocal re-ranking, features files."""
