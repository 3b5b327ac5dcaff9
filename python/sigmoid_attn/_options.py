"""Process-wide kernel choices of the CUDA path: the ops library's dispatch switches."""

from . import _library  # bound to the ops library by _ops

_SWITCHES = ("warp_specialized", "gluon_forward", "gluon_backward", "split_wave", "tile_queue")


class kernel_options:
    """Sets which kernels CUDA calls take, for the whole process. An argument left None keeps its
    setting. Use it as a call (the change stays) or as a context manager (the settings from
    before come back on exit); `previous` holds them.

    warp_specialized: the warp-specialized forward where one is compiled (hd128, non-causal).
        On by default (tiles.json fwd_ws_dispatch; SIGMOID_ATTN_WARP_SPECIALIZED=0/1 at load).
    gluon_forward: the Gluon forward (hand-scheduled, warp-specialized, persistent; fp16/bf16
        hd128) for the calls it covers: [B, T, H, D] batches without lengths or with lengths
        for both queries and keys and the default bias (non-causal ones of up to 16
        sequences; causal ones only with as many keys as queries), packed batches of up to 16
        sequences with the default bias, no score_mod, no bias tensor,
        heads
        packed along each row (head stride D), at least one 128-row tile per SM. It takes
        precedence over warp_specialized there. On by default (tiles.json fwd_gluon_dispatch;
        SIGMOID_ATTN_GLUON_FORWARD=0/1 at load); built only with Triton 3.8, otherwise a no-op.
    gluon_backward: the Gluon backward (hand-scheduled, warp-specialized; fp16/bf16 hd64 and
        hd128; dK and dV summed over the GQA group in registers, dQ added in fp32 by TMA
        reductions, then cast) for the calls it covers: [B, T, H, D] batches without lengths or
        with lengths for both queries and keys and the default bias, causal ones only with as
        many keys as queries, no score_mod, no bias tensor, heads packed along each row. dQ is
        not bitwise reproducible, so with torch.use_deterministic_algorithms(True) the backward
        stays on the two-kernel path. On by default (tiles.json bwd_gluon_dispatch;
        SIGMOID_ATTN_GLUON_BACKWARD=0/1 at load); built only with Triton 3.8, otherwise a no-op.
    split_wave: in the Gluon forward's dense, non-causal calls up to 128 columns, the tiles
        past the last whole wave over the SMs split by key blocks over every SM, their pieces
        summed in a fixed order (reproducible; two small buffers from the caching allocator),
        where a tile has at least 32 key blocks (4,096 keys: below, the join's fixed costs
        outweigh the idle SMs). On by default (SIGMOID_ATTN_SPLIT_WAVE=0/1 at load; 2 splits
        every call with a partial wave, as the tests do).
    tile_queue: in the Gluon forward's padded and packed calls of more tiles than SMs, each
        program takes its next tile from a queue (a counter zeroed on the stream before the
        launch) instead of a static share: a program given lighter tiles takes more of them.
        On by default (SIGMOID_ATTN_TILE_QUEUE=0/1 at load).

    Not thread-local: a setting made in one thread applies to calls from every thread. Each
    call reads the switches afresh (torch.compile and CUDA graphs included: a captured graph
    keeps the kernels it captured)."""

    def __init__(self, *, warp_specialized=None, gluon_forward=None, gluon_backward=None,
                 split_wave=None, tile_queue=None):
        wanted = {"warp_specialized": warp_specialized, "gluon_forward": gluon_forward,
                  "gluon_backward": gluon_backward, "split_wave": split_wave,
                  "tile_queue": tile_queue}
        for name, value in wanted.items():
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"kernel_options: {name} must be a bool or None, got "
                                f"{type(value).__name__} {value!r}")
        # (the C settings as they were, restored as such: split_wave may be 2)
        self.previous = {
            name: _library.dispatch_switch(name, -1 if value is None else int(value))
            for name, value in wanted.items()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name, value in self.previous.items():
            _library.dispatch_switch(name, int(value))
        return False


def current_kernel_options() -> dict:
    """The switches' settings now: {"warp_specialized": bool, "gluon_forward": bool,
    "gluon_backward": bool, "split_wave": bool, "tile_queue": bool}."""
    return {name: bool(_library.dispatch_switch(name, -1)) for name in _SWITCHES}
