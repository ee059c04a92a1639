"""Ops of the 'features' family (see SPEC.md); registered on import."""
