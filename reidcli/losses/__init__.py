"""Losses and their weighted composition (`build_criterion`)."""
