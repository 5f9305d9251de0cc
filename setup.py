"""setuptools entry point: the metadata lives in pyproject.toml; this only names the cffi build."""
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
