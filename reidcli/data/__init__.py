"""Datasets: layouts, manifest, synthetic generator (torch-free); dataset, sampler, transforms and loaders (torch)."""
