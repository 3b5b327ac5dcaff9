"""The stress test's picture (stress.py): loss, gradient norm (linear and log), largest attention
logit and step time per step for each attention, and the median step split into attention and
the rest. Skipped, with a note, where matplotlib is not installed."""

from __future__ import annotations

import numpy as np

COLORS = {"softmax": "tab:blue", "sigmoid": "tab:red"}
STYLES = ["-", "--", ":", "-."]  # one per seed


def plot(result: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot")
        return
    runs = result["runs"]
    st = result["settings"]
    fig, ax = plt.subplots(2, 3, figsize=(17, 8.5))
    seeds = sorted({r["seed"] for r in runs})
    for r in runs:
        c, ls = COLORS[r["attention"]], STYLES[seeds.index(r["seed"]) % len(STYLES)]
        label = f"{r['attention']} seed {r['seed']}"
        steps = np.arange(len(r["loss"]))
        vals = {k: np.array([np.nan if v is None else v for v in r[k]], dtype=float)
                for k in ("loss", "grad_norm", "max_logit", "step_ms")}
        ax[0, 0].plot(steps, vals["loss"], color=c, ls=ls, lw=0.8, label=label)
        ax[0, 1].plot(steps, vals["grad_norm"], color=c, ls=ls, lw=0.8, label=label)
        ax[0, 2].semilogy(steps, vals["grad_norm"], color=c, ls=ls, lw=0.8, label=label)
        ax[1, 0].plot(steps, vals["max_logit"], color=c, ls=ls, lw=0.8, label=label)
        ax[1, 1].plot(steps, vals["step_ms"], color=c, ls=ls, lw=0.8, label=label)
        if r.get("grad_norm_ref"):
            ax[0, 2].axhline(st["diverge_factor"] * r["grad_norm_ref"], color=c, lw=0.6, ls=ls,
                             alpha=0.5)
        if r["diverged_at_step"] is not None:
            for a in (ax[0, 0], ax[0, 1], ax[0, 2]):
                a.axvline(r["diverged_at_step"], color=c, lw=0.8, ls=":", alpha=0.8)
    ax[0, 0].set(xlabel="step", ylabel="masked-gene cross-entropy", title="training loss")
    ax[0, 1].set(xlabel="step", ylabel="gradient norm", title="global gradient norm (no clipping)")
    ax[0, 2].set(xlabel="step", ylabel="gradient norm (log)",
                 title=f"log scale; thin lines: {st['diverge_factor']:g}x the median of the "
                       f"first {st['ref_steps']} steps")
    ax[1, 0].set(xlabel="step", ylabel="max scale * q.k",
                 title=f"largest attention logit (every {st['logit_stride']}th query)")
    ax[1, 1].set(xlabel="step", ylabel="ms", title="step time")
    for a in ax.flat[:5]:
        a.legend(fontsize=7)
    # median step split: attention forward+backward alone (timed in the same run) and the rest
    names, attn, rest = [], [], []
    for r in runs:
        names.append(f"{r['attention']}\nseed {r['seed']}")
        a = min(r["attention_share_of_step"], 1.0) * r["step_ms_median"]
        attn.append(a)
        rest.append(r["step_ms_median"] - a)
    x = np.arange(len(runs))
    ax[1, 2].bar(x, attn, color=[COLORS[r["attention"]] for r in runs], label="attention fwd+bwd")
    ax[1, 2].bar(x, rest, bottom=attn, color="lightgray", label="rest of the step")
    ax[1, 2].set_xticks(x, names, fontsize=8)
    ax[1, 2].set(ylabel="ms", title="median step time")
    ax[1, 2].legend(fontsize=7)
    fig.suptitle(f"{result['device']}: {result['parameters']['total'] / 1e6:.1f}M parameters, "
                 f"{st['batch']} cells x {st['tokens']} tokens, lr {st['lr']:g}, no clipping")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
