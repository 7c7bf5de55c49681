"""Losses and their weighted composition."""
