"""The report: accuracy joined to cost, paired tests against the best, agreement, plots."""
