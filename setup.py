"""Build the compiled offload modules (Cython, against OpenSSL's libssl/libcrypto)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ("connection", "tlscontext", "limits")

setup(
    ext_modules=cythonize(
        [
            Extension(f"offload.{name}", [f"offload/{name}.pyx"], libraries=["ssl", "crypto"])
            for name in MODULES
        ],
        language_level=3,
    )
)
