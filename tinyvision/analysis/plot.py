"""PNG chart of live arena memory per operator (matplotlib, Agg backend: no display needed)."""
import io

from tinyvision.fileio import atomic_write_bytes

_KIB = 1024.0


def plot_memory(profile, path, budget_bytes=None, title=None):
    """Write a bar chart of ``profile`` (a ``MemoryProfile``) to ``path`` (PNG).

    One bar per op of the main graph: the KiB of arena buffers alive while it runs;
    the peak op is drawn in red, the planned head (TFLM's arena head) as a dashed line,
    and ``budget_bytes`` (e.g. SRAM left for the arena) as a solid line when given.
    Returns ``path``.
    """
    # A bare Figure on an Agg canvas: no pyplot global state, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ops = profile.ops
    fig = Figure(figsize=(max(6.0, min(24.0, 0.12 * len(ops) + 4)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    heights = [o.live_bytes / _KIB for o in ops]
    colors = ["tab:red" if o.index == profile.peak_op else "tab:blue" for o in ops]
    ax.bar(range(len(ops)), heights, width=0.85, color=colors)
    if ops:
        peak = ops[profile.peak_op]
        ax.annotate(
            f"peak {peak.live_bytes / _KIB:.1f} KiB\n#{peak.index} {peak.opcode}",
            xy=(peak.index, peak.live_bytes / _KIB),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color="tab:red",
        )
    ax.axhline(profile.head_bytes / _KIB, color="gray", linestyle="--", linewidth=1,
               label=f"planned head {profile.head_bytes / _KIB:.1f} KiB")
    if budget_bytes is not None:
        over = profile.head_bytes > budget_bytes
        ax.axhline(budget_bytes / _KIB, color="tab:orange" if not over else "black", linewidth=1.5,
                   label=f"budget {budget_bytes / _KIB:.1f} KiB" + (" (exceeded)" if over else ""))
    if len(ops) <= 40:
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels([f"{o.index} {o.opcode}" for o in ops], rotation=90, fontsize=7)
    ax.set_xlabel("operator (execution order)")
    ax.set_ylabel("live activation memory (KiB)")
    ax.set_title(title or "Live arena memory per operator")
    top = max(heights + [profile.head_bytes / _KIB, (budget_bytes or 0) / _KIB, 1.0])
    ax.set_ylim(0, top * 1.18)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
