"""Losses and their weighted composition: `reidcli.losses.criterion.build_criterion`."""
