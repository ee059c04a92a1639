"""Object ops (SPEC.md "Objects"): morphology and the distance transform; ``threshold {method}``'s pre-pass.

Each op reads its input as ``x != 0`` where it needs a mask and acts on every sub-array over ``axes``
(default: every spatial axis z, y, x of the input).
"""
