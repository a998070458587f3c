"""The libcrypto seam: OpenSSL's own X509_verify_cert over DER certificates, via ctypes.

It binds the libcrypto that the stdlib's `ssl` module is linked against, so a verdict here is
the verdict of this host's TLS clients (curl, Python's `ssl`). The verifier runs as a TLS
client sets it up (`X509_STORE_CTX_set_default(ctx, "ssl_server")`: purpose and trust of a
server certificate), without `X509_V_FLAG_PARTIAL_CHAIN`, at a time given by the caller.
Every call clears OpenSSL's per-thread error queue so that `ssl` never sees our errors.
Building an X509_STORE is slow in OpenSSL 3.0 (quadratic in the roots), so the last few
stores are kept, keyed by the roots' digest, and each call holds a reference while it runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass

X509_V_OK = 0
X509_V_FLAG_X509_STRICT = 0x20
_NO_PARTIAL_WILDCARDS = 0x4
_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_P = ctypes.c_void_p
_KEPT_STORES = 4

_SIGNATURES: dict[str, tuple[type | None, list[type]]] = {
    "d2i_X509": (_P, [_P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
    "X509_free": (None, [_P]),
    "X509_STORE_new": (_P, []),
    "X509_STORE_free": (None, [_P]),
    "X509_STORE_up_ref": (ctypes.c_int, [_P]),
    "X509_STORE_add_cert": (ctypes.c_int, [_P, _P]),
    "OPENSSL_sk_new_null": (_P, []),
    "OPENSSL_sk_push": (ctypes.c_int, [_P, _P]),
    "OPENSSL_sk_free": (None, [_P]),
    "X509_STORE_CTX_new": (_P, []),
    "X509_STORE_CTX_free": (None, [_P]),
    "X509_STORE_CTX_init": (ctypes.c_int, [_P, _P, _P, _P]),
    "X509_STORE_CTX_set_default": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "X509_STORE_CTX_set_verify_cb": (None, [_P, _VerifyCallback]),
    "X509_STORE_CTX_get0_param": (_P, [_P]),
    "X509_STORE_CTX_get_error": (ctypes.c_int, [_P]),
    "X509_STORE_CTX_get_error_depth": (ctypes.c_int, [_P]),
    "X509_STORE_CTX_get_current_cert": (_P, [_P]),
    "X509_VERIFY_PARAM_set_time": (None, [_P, ctypes.c_int64]),
    "X509_VERIFY_PARAM_set_flags": (ctypes.c_int, [_P, ctypes.c_ulong]),
    "X509_VERIFY_PARAM_set_hostflags": (None, [_P, ctypes.c_uint]),
    "X509_VERIFY_PARAM_set1_host": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t]),
    "X509_VERIFY_PARAM_set1_ip_asc": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "X509_verify_cert": (ctypes.c_int, [_P]),
    "X509_verify_cert_error_string": (ctypes.c_char_p, [ctypes.c_long]),
    "ERR_clear_error": (None, []),
}


class OpenSSLUnavailable(RuntimeError):
    """The libcrypto of the `ssl` module cannot be loaded or lacks a needed function."""


def _library_path() -> str:
    """The libcrypto mapped into this process by `ssl` (Linux), else the linker's choice."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "/libcrypto" in path:
                    return path
    except OSError:
        pass
    found = ctypes.util.find_library("crypto")
    if found is None:
        raise OpenSSLUnavailable(f"no libcrypto found for {ssl.OPENSSL_VERSION}")
    return found


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(_library_path())
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
    except (OSError, AttributeError) as exc:
        raise OpenSSLUnavailable(f"cannot bind libcrypto ({ssl.OPENSSL_VERSION}): {exc}") from exc
    return lib


@dataclass(frozen=True)
class Failure:
    """One verifier error: OpenSSL's code and words, its depth in the built chain, and the
    index in `chain` (leaf first) or `roots` of the certificate it is about."""

    code: int
    text: str
    depth: int
    chain_index: int | None
    root_index: int | None


def error_text(code: int) -> str:
    """OpenSSL's words for a verify error code."""
    text = _lib().X509_verify_cert_error_string(code)
    return text.decode("ascii", "replace") if text else f"error {code}"


def _parse(lib: ctypes.CDLL, der: bytes) -> int:
    buffer = ctypes.c_char_p(der)
    handle = lib.d2i_X509(None, ctypes.byref(buffer), len(der))
    if not handle:
        raise ValueError("OpenSSL cannot read the certificate")
    return int(handle)


@dataclass(frozen=True)
class _Store:
    handle: int
    roots: dict[int, int]  # X509* of each root -> its index in the roots given


_stores: dict[tuple[bytes, ...], _Store] = {}
_stores_lock = threading.Lock()


def _build_store(lib: ctypes.CDLL, roots: Sequence[bytes]) -> _Store:
    store = lib.X509_STORE_new()
    if not store:
        raise MemoryError("OpenSSL could not allocate a trust store")
    where: dict[int, int] = {}
    try:
        for index, der in enumerate(roots):
            handle = _parse(lib, der)
            where[handle] = index
            lib.X509_STORE_add_cert(store, handle)
            lib.X509_free(handle)  # the store holds its own reference
    except ValueError:
        lib.X509_STORE_free(store)
        raise
    return _Store(int(store), where)


def _acquire(lib: ctypes.CDLL, roots: Sequence[bytes]) -> _Store:
    """A store of `roots` with one reference taken for the caller (free it after use)."""
    # The DER strings themselves are the key: their hashes are computed once per object.
    key = tuple(roots)
    with _stores_lock:
        store = _stores.pop(key, None) or _build_store(lib, roots)
        _stores[key] = store
        while len(_stores) > _KEPT_STORES:
            lib.X509_STORE_free(_stores.pop(next(iter(_stores))).handle)
        lib.X509_STORE_up_ref(store.handle)
    return store


def verify(
    chain: Sequence[bytes],
    roots: Sequence[bytes],
    at: int,
    host: str | None = None,
    ip: str | None = None,
    strict: bool = False,
) -> list[Failure]:
    """Run X509_verify_cert on `chain` (DER, leaf first) against `roots` at Unix time `at`.

    Returns [] when it verifies. Default mode stops at the first error (what a client does);
    `strict` adds X509_V_FLAG_X509_STRICT and collects every error instead. ValueError when a
    certificate cannot be parsed or `host`/`ip` cannot be set.
    """
    if not chain:
        raise ValueError("an empty chain")
    lib = _lib()
    owned: list[int] = []
    store = _acquire(lib, roots)
    untrusted = lib.OPENSSL_sk_new_null()
    ctx = lib.X509_STORE_CTX_new()
    failures: list[Failure] = []
    try:
        if not (untrusted and ctx):
            raise MemoryError("OpenSSL could not allocate a verification context")
        where: dict[int, tuple[int | None, int | None]] = {
            handle: (None, index) for handle, index in store.roots.items()
        }
        for index, der in enumerate(chain):
            handle = _parse(lib, der)
            owned.append(handle)
            where[handle] = (index, None)
            if index:
                lib.OPENSSL_sk_push(untrusted, handle)
        if not lib.X509_STORE_CTX_init(ctx, store.handle, owned[0], untrusted):
            raise MemoryError("OpenSSL could not initialise the verification context")
        lib.X509_STORE_CTX_set_default(ctx, b"ssl_server")
        param = lib.X509_STORE_CTX_get0_param(ctx)
        lib.X509_VERIFY_PARAM_set_time(param, at)
        lib.X509_VERIFY_PARAM_set_hostflags(param, _NO_PARTIAL_WILDCARDS)
        if host is not None and not lib.X509_VERIFY_PARAM_set1_host(
            param, host.encode("idna"), len(host.encode("idna"))
        ):
            raise ValueError(f"invalid host name {host!r}")
        if ip is not None and not lib.X509_VERIFY_PARAM_set1_ip_asc(param, ip.encode("ascii")):
            raise ValueError(f"invalid IP address {ip!r}")

        def record(ok: int, store_ctx: int | None) -> int:
            if ok:
                return 1
            code = lib.X509_STORE_CTX_get_error(store_ctx)
            current = lib.X509_STORE_CTX_get_current_cert(store_ctx)
            chain_index, root_index = where.get(int(current or 0), (None, None))
            failures.append(
                Failure(
                    code,
                    error_text(code),
                    lib.X509_STORE_CTX_get_error_depth(store_ctx),
                    chain_index,
                    root_index,
                )
            )
            return 1 if strict else 0

        callback = _VerifyCallback(record)
        if strict:
            lib.X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT)
        lib.X509_STORE_CTX_set_verify_cb(ctx, callback)
        verified = lib.X509_verify_cert(ctx)
        if verified != 1 and not failures:
            code = lib.X509_STORE_CTX_get_error(ctx)
            failures.append(Failure(code, error_text(code), -1, None, None))
    finally:
        if ctx:
            lib.X509_STORE_CTX_free(ctx)
        if untrusted:
            lib.OPENSSL_sk_free(untrusted)
        lib.X509_STORE_free(store.handle)
        for handle in owned:
            lib.X509_free(handle)
        lib.ERR_clear_error()
    return failures
