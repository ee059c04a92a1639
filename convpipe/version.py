"""convpipe's version, in a leaf module: the run records it in provenance without importing the package's API.

``convpipe.__version__`` is this value (pyproject.toml's ``version`` too: ``tests/test_import_layers.py``
checks that the three agree).
"""

__version__ = "0.1.0"
