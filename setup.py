"""For the tools that call setup.py rather than a PEP 517 build: Beam's `--setup_file`
(it runs `python setup.py sdist` to ship the package to its workers; docs/distributed.md)
and older pips' editable installs. The package is described in pyproject.toml alone, which
setuptools reads from there, so each setting has one place."""
from setuptools import setup

setup()
