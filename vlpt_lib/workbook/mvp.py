"""Placeholder: being written."""
PARAM_CHECKS: dict = {}
