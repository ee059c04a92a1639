"""Ops of the 'axis' family (see SPEC.md); registered on import."""
