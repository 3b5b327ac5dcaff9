"""The three serving modes measured one after another on this machine: for each, server.py is
started on a free loopback port (training its checkpoint on first use), load.py runs its sweep
for each length mix, and the server is stopped. Results go where load.py puts them,
--out-dir (default: $TMPDIR/sigmoid_attn_serving/<device>), <mode>_<mix>.json and PNGs, with one
plot per mix across the modes.

    python examples/serving/bench.py                                   # cuda if available
    python examples/serving/bench.py --device cpu --max-cell-tokens 4096 --duration 10
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import load as L  # noqa: E402

MODES = ("sigmoid_packed", "sigmoid_padded", "sdpa_padded")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--mixes", nargs="+", choices=["data", "heavy", "both"],
                    default=["both", "data"])
    ap.add_argument("--server-args", default="",
                    help="more server.py arguments, one string (e.g. '--size base --threads 2')")
    ap.add_argument("--device", help="server.py --device (default: its own)")
    ap.add_argument("--token-budget", type=int)
    ap.add_argument("--max-wait-ms", type=float)
    ap.add_argument("--max-cell-tokens", type=int)
    ap.add_argument("--rates", nargs="+", default=["auto"])
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--cells", type=int, default=512)
    ap.add_argument("--out-dir")
    args = ap.parse_args()

    server_args = args.server_args.split()
    for flag in ("device", "token_budget", "max_wait_ms", "max_cell_tokens"):
        value = getattr(args, flag)
        if value is not None:
            server_args += [f"--{flag.replace('_', '-')}", str(value)]
    for mode in args.modes:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tempfile.NamedTemporaryFile("w+", prefix=f"serve_{mode}_", suffix=".log",
                                          delete=False)
        cmd = [sys.executable, os.path.join(HERE, "server.py"), "--mode", mode, "--port",
               str(port), *server_args]
        print(" ".join(cmd[1:]), flush=True)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            L.wait_ready(url, 900, proc)  # the first start of a mode trains its checkpoint
            for mix in args.mixes:
                load_args = ["--url", url, "--mix", mix, "--duration", str(args.duration),
                             "--concurrency", str(args.concurrency), "--cells", str(args.cells),
                             "--rates", *args.rates]
                L.main(load_args + (["--out-dir", args.out_dir] if args.out_dir else []))
        except Exception:
            log.seek(0)
            print(log.read()[-4000:], file=sys.stderr)
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            os.unlink(log.name)


if __name__ == "__main__":
    main()
