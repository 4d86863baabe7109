"""Fault injection: the reliability matrix (issue 8), in the normal test run."""
