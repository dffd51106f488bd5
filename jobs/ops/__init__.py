"""Operator commands run by hand (``make rollback``)."""
