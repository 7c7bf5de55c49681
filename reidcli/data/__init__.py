"""Datasets: layouts, manifest, synthetic data (torch-free); dataset, sampler, loaders (torch)."""
