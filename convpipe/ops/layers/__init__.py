"""Convolutional layers (SPEC.md, "Convolutional layers"): :mod:`.pool` and :mod:`.conv_layer`, whose output
extents change (see :mod:`convpipe.tiles`); :mod:`.window` holds the extent/stride arithmetic that correlate,
convolve, filter_bank and conv_layer share. Their parameters are :mod:`convpipe.params.layers`.
"""
