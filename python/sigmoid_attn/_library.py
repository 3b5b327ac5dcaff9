"""The ops library's C entry points for Python (csrc/build_info.h): build facts, the kernel
catalog and the process-wide dispatch switches, called through ctypes. Pure Python, so one wheel
serves every CPython >= 3.10; none of it is on a per-call path.

The library is loaded by torch.ops.load_library (_ops.py); bind() takes the same handle."""

import ctypes
import os
import sys

LIBRARY_NAME = "libsigmoid_attn_ops.so"

_str, _int = ctypes.c_char_p, ctypes.c_int
# name: (restype, argtypes)
_FUNCTIONS = {
    "sigmoid_attn_version": (_str, []),
    "sigmoid_attn_torch_build_version": (_str, []),
    "sigmoid_attn_triton_build_version": (_str, []),
    "sigmoid_attn_cuda_header_version": (_int, []),
    "sigmoid_attn_compiled_arch": (_int, []),
    "sigmoid_attn_num_kernels": (_int, []),
    "sigmoid_attn_kernel_name": (_str, [_int]),  # (kernel index)
    "sigmoid_attn_kernel_field": (_int, [_int, _str]),  # (kernel index, field name)
    "sigmoid_attn_kernel_label": (_str, [_int, _str]),
    # the dispatch switches: set 1/0, < 0 only reads; each returns the setting before
    "sigmoid_attn_warp_specialized": (_int, [_int]),
    "sigmoid_attn_gluon_forward": (_int, [_int]),
    "sigmoid_attn_gluon_backward": (_int, [_int]),
    "sigmoid_attn_split_wave": (_int, [_int]),
    "sigmoid_attn_tile_queue": (_int, [_int]),
}
# Python's names of the switches (kernel_options) -> their C entry points
_SWITCHES = {
    "warp_specialized": "sigmoid_attn_warp_specialized",
    "gluon_forward": "sigmoid_attn_gluon_forward",
    "gluon_backward": "sigmoid_attn_gluon_backward",
    "split_wave": "sigmoid_attn_split_wave",
    "tile_queue": "sigmoid_attn_tile_queue",
}
_INT_FIELDS = ("head_dim", "block_m", "block_n", "num_warps", "num_stages", "min_t",
               "shared_bytes", "num_hidden_params", "cubin_bytes", "stride_multiple")

_api = None  # name -> the bound C function, set by bind()


def locate():
    """The ops library's path: the first of the package's directories that holds it (an
    installed package has one; an editable install has the source tree and the install tree)."""
    dirs = list(sys.modules[__package__].__path__)
    for d in dirs:
        path = os.path.join(os.path.abspath(d), LIBRARY_NAME)
        if os.path.isfile(path):
            return path
    raise ImportError(f"sigmoid_attn: {LIBRARY_NAME} is not built next to the package (looked in "
                      f"{', '.join(dirs)}); install it with pip (pip install . from the source "
                      "tree)")


def bind(path):
    """Resolves the ops library's C entry points (path: the library, normally already loaded)."""
    global _api
    try:  # the handle torch.ops.load_library opened, if any; otherwise load it
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOW)
        except OSError as e:
            raise RuntimeError(f"sigmoid_attn._library: cannot open {path}: {e}") from None
    api = {}
    for name, (restype, argtypes) in _FUNCTIONS.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise RuntimeError(f"sigmoid_attn._library: missing {name} in {path}") from None
        f.restype, f.argtypes = restype, argtypes
        api[name] = f
    _api = api


def _bound():
    if _api is None:
        raise RuntimeError("sigmoid_attn._library: bind() first")
    return _api


def _text(b):
    return None if b is None else b.decode()


def build_info():
    """{"version", "torch", "triton": the versions built with, "cuda": "13.0" (cuda.h's),
    "arch": "sm_90"}."""
    a = _bound()
    cuda = a["sigmoid_attn_cuda_header_version"]()
    return {
        "version": _text(a["sigmoid_attn_version"]()),
        "torch": _text(a["sigmoid_attn_torch_build_version"]()),
        "triton": _text(a["sigmoid_attn_triton_build_version"]()),
        "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}",
        "arch": f"sm_{a['sigmoid_attn_compiled_arch']()}",
    }


def dispatch_switch(name, value):
    """Sets a process-wide dispatch switch (value 1/0; < 0 only reads); returns the setting
    before."""
    a = _bound()
    if name not in _SWITCHES:
        raise ValueError(f"sigmoid_attn._library.dispatch_switch: unknown switch {name!r}, "
                         "expected 'warp_specialized', 'gluon_forward', 'gluon_backward', "
                         "'split_wave' or 'tile_queue'")
    return a[_SWITCHES[name]](value)


def kernel_catalog():
    """One dict per compiled kernel, in the library's order: name, kind, dtype (names from
    variants.py, as the library has them), the flags and the integer fields."""
    a = _bound()
    field, label = a["sigmoid_attn_kernel_field"], a["sigmoid_attn_kernel_label"]
    out = []
    for i in range(a["sigmoid_attn_num_kernels"]()):
        k = {"name": _text(a["sigmoid_attn_kernel_name"](i)),
             "kind": _text(label(i, b"kind")),
             "dtype": _text(label(i, b"dtype"))}
        for f in ("causal", "score_mod", "varlen",
                  # generic: head_dim is its BLOCK_D, serving the multiples of 8 up to it
                  "runtime_head_dim"):
            k[f] = bool(field(i, f.encode()))
        for f in _INT_FIELDS:
            k[f] = field(i, f.encode())
        out.append(k)
    return out
