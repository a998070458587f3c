"""Build the compiled connection module (`offload/connection.pyx`, OpenSSL's libssl)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("offload.connection", ["offload/connection.pyx"], libraries=["ssl", "crypto"])],
        language_level=3,
    )
)
