"""Ops of the 'spectral' family (see SPEC.md); registered on import."""
