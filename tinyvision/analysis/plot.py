"""PNG charts of arena memory (matplotlib, Agg backend: no display needed).

``plot_memory``: one model, per operator. ``plot_bundle_memory``: a patch bundle, one panel per
stage and one for the tail, above the arena map (shared region, stage buffers, persistent slots).
"""
import io

from tinyvision.fileio import atomic_write_bytes

_KIB = 1024.0
_NONPERSISTENT, _PERSISTENT, _PEAK = "tab:blue", "silver", "tab:red"
_FONT = 10


def plot_memory(profile, path, budget_bytes=None, title=None, persistent_bytes=0):
    """Write a bar chart of ``profile`` (a ``MemoryProfile``) to ``path`` (PNG); returns ``path``.

    One stacked bar per op of the main graph: the arena buffers alive while it runs (non-persistent)
    under ``persistent_bytes`` (TFLM's tail, alive throughout). The peak op is red and named; the
    dashed line is the whole arena (planned head + persistent), which ``budget_bytes`` is drawn against.
    """
    ops = profile.ops
    fig, ax = _figure(1, 1, width=min(16.0, max(8.0, 0.1 * len(ops) + 5)), height=5.0)
    ax = ax[0]
    live = [o.live_bytes / _KIB for o in ops]
    tail = persistent_bytes / _KIB
    colors = [_PEAK if o.index == profile.peak_op else _NONPERSISTENT for o in ops]
    positions = range(len(ops))
    ax.bar(positions, live, width=0.85, color=colors, label="non-persistent (live tensors and scratch)")
    if persistent_bytes:
        ax.bar(positions, [tail] * len(ops), bottom=live, width=0.85, color=_PERSISTENT,
               label=f"persistent {tail:.1f} KiB")
    total = profile.head_bytes + persistent_bytes
    ax.axhline(total / _KIB, color="black", linestyle="--", linewidth=1,
               label=f"arena: planned head {profile.head_bytes / _KIB:.1f} + persistent {tail:.1f} KiB")
    _budget_line(ax.axhline, budget_bytes, total)
    if ops:
        peak = ops[profile.peak_op]
        ax.annotate(f"peak: op {peak.index} {peak.opcode}\n{peak.live_bytes / _KIB:.1f} KiB live",
                    xy=(peak.index, peak.live_bytes / _KIB + tail), xytext=(12, 36), textcoords="offset points",
                    ha="left", fontsize=_FONT, color=_PEAK, arrowprops={"arrowstyle": "->", "color": _PEAK},
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": _PEAK})
    step = max(1, len(ops) // 40)
    ax.set_xticks(list(positions)[::step])
    ax.set_xticklabels([f"{o.index} {o.opcode}" for o in ops][::step], rotation=90, fontsize=_FONT - 2)
    ax.set_xlabel("operator (execution order)", fontsize=_FONT)
    ax.set_ylabel("arena memory (KiB)", fontsize=_FONT)
    ax.set_title(title or "Arena memory per operator", fontsize=_FONT + 2)
    top = max(live + [0]) + tail
    ax.set_ylim(0, max(top, total / _KIB, (budget_bytes or 0) / _KIB, 1.0) * 1.25)
    ax.legend(loc="upper right", fontsize=_FONT - 1)
    return _save(fig, path)


def plot_bundle_memory(bundle, path, budget_bytes=None, title=None):
    """Write the memory picture of a finalized ``Bundle`` to ``path`` (PNG); returns ``path``.

    Top row: one panel per patch stage and one for the tail; a bar per model: its TFLM head
    (non-persistent, planned inside the shared region) under its persistent bytes, with the shared
    region and the stage buffer the models write as lines. Bottom: the arena map by offset.
    """
    arena = bundle.arena
    stage_of = {p.model: p.stage for p in bundle.patches}
    groups = [(f"stage {k}: {len({p.model for p in bundle.patches if p.stage == k})} model(s), "
               f"{sum(1 for p in bundle.patches if p.stage == k)} patches",
               [i for i in range(len(bundle.models)) if stage_of.get(i) == k], arena["stages"][k])
              for k in range(len(bundle.stages))]
    groups.append(("tail", [bundle.tail], arena["stages"][-1]))
    fig, axes = _figure(2, len(groups), width=max(10.0, 3.6 * len(groups)), height=8.0, map_row=True)
    shared = arena["shared"]["size"] / _KIB
    for ax, (label, members, stage) in zip(axes[:-1], groups):
        models = [bundle.models[i] for i in members]
        heads = [(m.nonpersistent_bytes or 0) / _KIB for m in models]
        persistent = [(m.persistent_bytes or 0) / _KIB for m in models]
        ax.bar(range(len(models)), heads, color=_NONPERSISTENT, label="head (non-persistent)")
        ax.bar(range(len(models)), persistent, bottom=heads, color=_PERSISTENT, label="persistent")
        ax.axhline(shared, color="black", linestyle="--", linewidth=1, label=f"shared region {shared:.1f} KiB")
        ax.axhline(stage["size"] / _KIB, color="tab:green", linewidth=1.5,
                   label=f"{'input' if label == 'tail' else 'output'} stage buffer {stage['size'] / _KIB:.1f} KiB")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([m.name for m in models], rotation=45, ha="right", fontsize=_FONT - 2)
        ax.set_title(label, fontsize=_FONT)
        ax.set_ylabel("KiB", fontsize=_FONT)
        ax.set_ylim(0, max([shared] + [h + p for h, p in zip(heads, persistent)]) * 1.35)
        ax.legend(loc="upper right", fontsize=_FONT - 3)
    _arena_map(axes[-1], bundle, budget_bytes)
    fig.suptitle(title or "Patch bundle memory", fontsize=_FONT + 2)
    return _save(fig, path)


def _arena_map(ax, bundle, budget_bytes):
    """The arena as one strip by offset: shared region, stage buffers inside it, persistent slots after."""
    arena = bundle.arena
    shared = arena["shared"]
    ax.broken_barh([(shared["offset"] / _KIB, shared["size"] / _KIB)], (0.0, 1.0), color="lightsteelblue",
                   label=f"shared region {shared['size'] / _KIB:.1f} KiB (every model's head)")
    for k, stage in enumerate(arena["stages"]):
        ax.broken_barh([(stage["offset"] / _KIB, stage["size"] / _KIB)], (0.15, 0.7), color="tab:green",
                       edgecolor="white", label="stage buffers" if k == 0 else None)
        ax.text((stage["offset"] + stage["size"] / 2) / _KIB, 0.5, f"s{k}", ha="center", va="center",
                fontsize=_FONT - 1, color="white")
    mode = arena.get("interpreters", "resident")
    slots = {(s["offset"], s["size"]) for s in arena["persistent"]}
    for n, (offset, size) in enumerate(sorted(slots)):
        ax.broken_barh([(offset / _KIB, size / _KIB)], (0.0, 1.0), color=_PERSISTENT, edgecolor="dimgray",
                       label=(f"persistent slot ({mode.replace('_', ' ')})" if n == 0 else None))
    _budget_line(ax.axvline, budget_bytes, arena["size"])
    ax.axvline(arena["size"] / _KIB, color="black", linestyle="--", linewidth=1,
               label=f"arena {arena['size'] / _KIB:.1f} KiB")
    ax.set_yticks([])
    ax.set_xlabel("arena offset (KiB)", fontsize=_FONT)
    ax.set_xlim(0, max(arena["size"], budget_bytes or 0) / _KIB * 1.02)
    ax.set_ylim(0, 1.6)
    ax.legend(loc="upper center", ncol=3, fontsize=_FONT - 2)
    ax.set_title("arena map", fontsize=_FONT)


def _budget_line(draw, budget_bytes, total_bytes):
    if budget_bytes is None:
        return
    over = total_bytes > budget_bytes
    draw(budget_bytes / _KIB, color="tab:red" if over else "tab:orange", linewidth=1.8,
         label=f"budget {budget_bytes / _KIB:.1f} KiB" + (" (exceeded)" if over else ""))


def _figure(rows, columns, width, height, map_row=False):
    """A bare Figure on an Agg canvas (no pyplot global state) and its axes; with ``map_row`` the
    bottom row is one axes spanning every column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    if not map_row:
        return fig, [fig.add_subplot(rows, columns, i + 1) for i in range(rows * columns)]
    grid = fig.add_gridspec(2, columns, height_ratios=(3, 1.4))
    return fig, [fig.add_subplot(grid[0, i]) for i in range(columns)] + [fig.add_subplot(grid[1, :])]


def _save(fig, path):
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
