"""Draw the course's architecture diagrams with matplotlib, as SVG files.

    .venv/bin/python scripts/draw_diagrams.py              # writes ctxlib/figures/<name>.svg (package data)
    .venv/bin/python scripts/draw_diagrams.py --out DIR    # writes DIR/<name>.svg instead

The diagrams (one function each, drawn with patches, arrows and text only):

    transformer_block      post-LN (Transformer, GPT-1, BERT) and pre-LN (GPT-2) blocks
    elmo_stack             ELMo: char CNN + highway, two biLSTM layers, the task's scalar mix
    bert_input             BERT's input: token + segment + position embeddings
    gpt1_inputs            GPT-1's input transformations for four kinds of task
    xlnet_two_streams      XLNet's content and query streams for the order 3 -> 2 -> 4 -> 1
    transformerxl_memory   Transformer-XL: a cached segment, relative positions

Every figure is at most 7 in wide (the book's page width) with text of at least 9 pt, and the
text stays text in the SVG. The output is byte-for-byte reproducible (fixed hash salt, no date):
tests/test_diagrams.py fails when the committed SVGs are not what this script draws, so rerun it
after changing a diagram.
"""

from __future__ import annotations

import argparse
from itertools import pairwise
from pathlib import Path

import matplotlib
from matplotlib import colors, style
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.textpath import TextPath

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "ctxlib" / "figures"

RC = {
    "svg.hashsalt": "ctxlib-diagrams",  # fixed ids: the same SVG at every run
    "svg.fonttype": "none",  # text stays text (searchable, small files)
    "font.family": "sans-serif",
    "font.size": 9,
    "mathtext.fontset": "dejavusans",
}
FS = 9  # body text (pt): the smallest size used anywhere
TITLE = 11
MATH = 13  # symbols with subscripts: a subscript is 0.7 of this, so above 9 pt

# The tab10 palette, one meaning per colour across the diagrams.
ATTN = "tab:orange"  # attention, the Transformer
FFN = "tab:blue"  # feed-forward and linear layers; forward LSTM; content stream
NORM = "tab:green"  # layer norm; special tokens; ELMo's layer 0
BACK = "tab:red"  # backward LSTM; the query being attended from
QUERY = "tab:purple"  # query stream; output heads
GREY = "tab:gray"  # inputs, cached states


def light(color: str, amount: float = 0.25) -> tuple[float, float, float]:
    """``color`` mixed with white: ``amount`` of the colour."""
    r, g, b = colors.to_rgb(color)
    return (1 - amount + amount * r, 1 - amount + amount * g, 1 - amount + amount * b)


def text_width(text: str, size: float = FS) -> float:
    """Width of ``text`` in inches at ``size`` pt."""
    return TextPath((0, 0), text, size=size).get_extents().width / 72


def canvas(width: float, height: float, title: str | None = None):
    """A figure whose data coordinates are inches from its bottom-left corner."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    if title:
        ax.text(width / 2, height - 0.2, title, size=TITLE, weight="bold", ha="center",
                va="center")
    return fig, ax


def box(ax, x, y, w, h, label="", color=GREY, size=FS, fill=0.25, **text_kw):
    """A rounded box centred on (x, y), ``w`` by ``h`` inches, with a centred label."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, facecolor=light(color, fill),
                                boxstyle="round,pad=0,rounding_size=0.05", edgecolor=color,
                                linewidth=1.2))
    if label:
        ax.text(x, y, label, size=size, ha="center", va="center", **text_kw)


def node(ax, x, y, r, label="", color=GREY, fill=0.25, size=MATH, **kw):
    """A circle centred on (x, y) with a centred label."""
    ax.add_patch(Circle((x, y), r, facecolor=light(color, fill), edgecolor=color, linewidth=1.2,
                        **kw))
    if label:
        ax.text(x, y, label, size=size, ha="center", va="center")


def arrow(ax, start, end, color="black", lw=1.0, **kw):
    """A straight arrow from ``start`` to ``end`` (points in inches)."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, color=color,
                                 linewidth=lw, shrinkA=0, shrinkB=0, **kw))


def line(ax, points, color="black", lw=1.0, **kw):
    """A polyline through ``points``."""
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=color, linewidth=lw, solid_capstyle="butt", **kw)


def plus(ax, x, y, r=0.1):
    """A residual add: (+) in a circle."""
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor="black", linewidth=1.0))
    line(ax, [(x - r * 0.6, y), (x + r * 0.6, y)])
    line(ax, [(x, y - r * 0.6), (x, y + r * 0.6)])


# --- Transformer blocks ----------------------------------------------------------------------

def block_panel(ax, cx, y, pre_ln: bool):
    """One Transformer block drawn upwards from its input x, at height ``y``."""
    w, h, r, gap = 1.75, 0.32, 0.11, 0.22
    attn, ffn = ("box", "Multi-head attention", ATTN), ("box", "Feed-forward (FFN)", FFN)
    norm = ("box", "LayerNorm", NORM)
    if pre_ln:
        items = [("branch",), norm, attn, ("add",), ("branch",), norm, ffn, ("add",)]
    else:
        items = [("branch",), attn, ("add",), norm, ("branch",), ffn, ("add",), norm]
    ax.text(cx, y - 0.12, "x", size=FS + 1, ha="center", va="center", style="italic")
    bottom, branch = y + 0.05, None
    for kind, *rest in items:
        if kind == "branch":  # the skip connection leaves the main path here
            line(ax, [(cx, y), (cx, y + 0.12)])
            y = branch = y + 0.12
            ax.add_patch(Circle((cx, y), 0.03, color="black"))
        elif kind == "box":
            arrow(ax, (cx, y), (cx, y + gap))
            box(ax, cx, y + gap + h / 2, w, h, *rest)
            y += gap + h
        else:  # the residual add: main path from below, skip connection from the left
            arrow(ax, (cx, y), (cx, y + gap))
            y += gap
            plus(ax, cx, y + r, r)
            skip_x = cx - w / 2 - 0.2
            line(ax, [(cx, branch), (skip_x, branch), (skip_x, y + r)], color="0.3")
            arrow(ax, (skip_x, y + r), (cx - r, y + r), color="0.3")
            y += 2 * r
    arrow(ax, (cx, y), (cx, y + 0.25))
    ax.add_patch(FancyBboxPatch((cx - 1.3, bottom), 2.45, y + 0.1 - bottom,
                                boxstyle="round,pad=0,rounding_size=0.08", zorder=0,
                                facecolor=light(GREY, 0.08), edgecolor=light(GREY, 0.5)))
    ax.text(cx + 1.22, (bottom + y + 0.1) / 2, "×N", size=FS + 1, ha="right", va="center")


def transformer_block():
    """Post-LN (Vaswani et al. 2017; GPT-1; BERT) beside pre-LN (GPT-2, Radford et al. 2019)."""
    fig, ax = canvas(7, 5.05)
    for cx, pre_ln, title, formulas in [
        (1.75, False, "Post-LN: Transformer, GPT-1, BERT",
         ["x = LN(x + Attn(x))", "x = LN(x + FFN(x))"]),
        (5.25, True, "Pre-LN: GPT-2", ["x = x + Attn(LN(x))", "x = x + FFN(LN(x))"]),
    ]:
        ax.text(cx, 4.85, title, size=TITLE, weight="bold", ha="center", va="center")
        block_panel(ax, cx, 1.1, pre_ln)
        for k, formula in enumerate(formulas):
            ax.text(cx, 0.72 - 0.22 * k, formula, size=FS + 1, ha="center", va="center",
                    family="monospace")
    ax.text(5.25, 0.22, "then one more LayerNorm after the last block", size=FS, ha="center",
            va="center", color="0.3")
    return fig


# --- ELMo ------------------------------------------------------------------------------------

def elmo_stack():
    """ELMo (Peters et al. 2018): char CNN, forward and backward LSTMs, eq. 1's scalar mix."""
    fig, ax = canvas(7, 4.8, "ELMo: a character CNN, a two-layer biLM, a mix per task")
    tokens = ["by", "the", "river", "bank"]
    xs = [2.0 + 0.72 * k for k in range(len(tokens))]
    w, h = 0.46, 0.26
    # Layer 0 in the middle, the forward LM's layers above it, the backward LM's below.
    rows = {"f2": 3.85, "f1": 3.15, "l0": 2.35, "b1": 1.55, "b2": 0.85}
    labels = {"f2": "forward LSTM,\nlayer 2", "f1": "forward LSTM,\nlayer 1",
              "l0": "layer 0: char CNN +\nhighway, context-free\ntoken vectors",
              "b1": "backward LSTM,\nlayer 1", "b2": "backward LSTM,\nlayer 2"}
    for key, y in rows.items():
        ax.text(0.08, y, labels[key], size=FS, ha="left", va="center")
    for x, token in zip(xs, tokens):  # a context-free vector per token, from its characters
        box(ax, x, rows["l0"], 0.62, 0.4, token, NORM, size=FS + 1, family="monospace")
    for lower, upper, color, sign in [("l0", "f1", FFN, 1), ("f1", "f2", FFN, 1),
                                      ("l0", "b1", BACK, -1), ("b1", "b2", BACK, -1)]:
        reach = 0.2 if lower == "l0" else h / 2
        for x in xs:
            box(ax, x, rows[upper], w, h, "", color)
            arrow(ax, (x, rows[lower] + sign * reach), (x, rows[upper] - sign * h / 2))
        for a, b in pairwise(xs):  # the recurrence: left to right, or right to left
            start, end = (a + w / 2, b - w / 2) if sign > 0 else (b - w / 2, a + w / 2)
            arrow(ax, (start, rows[upper]), (end, rows[upper]), color=color, lw=1.4)
    mid = (xs[0] + xs[-1]) / 2
    ax.text(mid, 4.22, "predicts the next token", size=FS, ha="center", va="center", color=FFN)
    ax.text(mid, 0.48, "predicts the previous token", size=FS, ha="center", va="center",
            color=BACK)

    # The task's scalar mix, the same for every token k.
    ax.add_patch(FancyBboxPatch((4.7, 0.3), 2.25, 3.95, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=light(QUERY, 0.06), edgecolor=light(QUERY, 0.6)))
    ax.text(5.82, 4.02, "the task's mix, token k", size=FS, ha="center", va="center",
            weight="bold")
    sx, sy, sr = 6.45, 2.95, 0.2
    for j, y in [(2, 3.5), (1, 2.95), (0, 2.4)]:
        box(ax, 5.15, y, 0.62, 0.36, rf"$h_{{k,{j}}}$", QUERY, size=MATH)
        end = (sx - sr * 0.98, sy + (y - sy) * 0.35)
        arrow(ax, (5.46, y), end, color="0.3")
        ax.text(5.83, (y + end[1]) / 2 + 0.13, rf"$s_{j}$", size=MATH, ha="center", va="center")
    node(ax, sx, sy, sr, "Σ", QUERY, size=MATH)
    arrow(ax, (sx, sy - sr), (sx, 2.15))
    ax.text(sx, 1.95, r"$\times\,\gamma$", size=MATH, ha="center", va="center")
    arrow(ax, (sx, 1.75), (sx, 1.5))
    ax.text(sx, 1.3, r"$\mathrm{ELMo}_k$", size=MATH, ha="center", va="center")
    ax.text(4.8, 0.72, "layer 0: the char CNN vector\nlayers 1, 2: [forward; backward]\n"
            "s = softmax(w), γ: learned", size=FS, ha="left", va="center", color="0.3",
            linespacing=1.3)
    return fig


# --- BERT ------------------------------------------------------------------------------------

def embedding(name: str) -> str:
    """E with a roman subscript, in mathtext (which wants a # outside \\mathrm)."""
    return r"$\mathrm{E}_{" + r"\#" * name.count("#") + r"\mathrm{" + name.strip("#") + "}}$"


def bert_input():
    """BERT's input representation (Devlin et al. 2019, figure 2)."""
    tokens = ["[CLS]", "my", "dog", "is", "cute", "[SEP]", "he", "likes", "play", "##ing",
              "[SEP]"]
    fig, ax = canvas(7, 3.55, "BERT's input: token + segment + position embeddings")
    widths = [max(text_width(embedding(t), MATH), 0.34) + 0.12 for t in tokens]
    gap, h = 0.035, 0.36
    x = 6.95 - sum(widths) - gap * (len(tokens) - 1)
    rows = [("Input", 2.88), ("Token\nembeddings", 2.3), ("Segment\nembeddings", 1.65),
            ("Position\nembeddings", 1.0), ("Sum, per\nposition", 0.38)]
    for label, y in rows:
        ax.text(0.08, y, label, size=FS, ha="left", va="center")
    for k, (token, w) in enumerate(zip(tokens, widths)):
        x += w / 2
        segment = "A" if k <= tokens.index("[SEP]") else "B"
        ax.text(x, 2.88, token, size=FS + 1, ha="center", va="center")
        box(ax, x, 2.3, w, h, embedding(token), FFN, size=MATH)
        box(ax, x, 1.65, w, h, embedding(segment), NORM, size=MATH,
            fill=0.25 if segment == "A" else 0.55)
        box(ax, x, 1.0, w, h, embedding(str(k)), QUERY, size=MATH)
        for y, sign in [(1.975, "+"), (1.325, "+"), (0.69, "=")]:
            ax.text(x, y, sign, size=FS + 2, ha="center", va="center")
        box(ax, x, 0.38, w, 0.26, "", GREY, fill=0.45)
        x += w / 2 + gap
    return fig


# --- GPT-1 -----------------------------------------------------------------------------------

def token_row(ax, x, y, parts, h=0.3):
    """Boxes side by side from ``x``; returns the right end."""
    for part in parts:
        w = text_width(part) + 0.14
        box(ax, x + w / 2, y, w, h, part, NORM if part in ("Start", "Delim", "Extract") else FFN)
        x += w + 0.03
    return x - 0.03


def gpt1_inputs():
    """GPT-1's input transformations (Radford et al. 2018, figure 1, right)."""
    fig, ax = canvas(7, 4.4, "GPT-1: every task's input becomes token sequences")
    tx, px, lx = 4.95, 5.62, 6.1  # centres of the Transformer, add and Linear columns
    sy = (2.6 + 2.15) / 2  # similarity's add, between its two rows
    rows = [  # (task, y, the text between Start and Extract, the head after the Transformer)
        ("Classification", 3.7, ["Text"], "linear"),
        ("Entailment", 3.15, ["Premise", "Delim", "Hypothesis"], "linear"),
        ("Similarity", 2.6, ["Text 1", "Delim", "Text 2"], "add"),
        ("", 2.15, ["Text 2", "Delim", "Text 1"], "add"),
        ("Multiple\nchoice", 1.6, ["Context", "Delim", "Answer 1"], "choice"),
        ("", 1.15, ["Context", "Delim", "Answer 2"], "choice"),
        ("", 0.7, ["Context", "Delim", "Answer N"], "choice"),
    ]
    for task, y, parts, head in rows:
        ax.text(0.08, y, task, size=FS, weight="bold", ha="left", va="center")
        end = token_row(ax, 1.2, y, ["Start", *parts, "Extract"])
        arrow(ax, (end, y), (tx - 0.45, y))
        box(ax, tx, y, 0.9, 0.3, "Transformer", ATTN)
        if head == "add":  # similarity: both orders' representations are added
            line(ax, [(tx + 0.45, y), (px, y)])
            arrow(ax, (px, y), (px, sy + (0.1 if y > sy else -0.1)))
        else:
            arrow(ax, (tx + 0.45, y), (lx - 0.3, y))
            box(ax, lx, y, 0.6, 0.3, "Linear", QUERY)
        if head == "choice":
            arrow(ax, (lx + 0.3, y), (6.6, y))
    plus(ax, px, sy, 0.1)
    arrow(ax, (px + 0.1, sy), (lx - 0.3, sy))
    box(ax, lx, sy, 0.6, 0.3, "Linear", QUERY)
    box(ax, 6.76, 1.15, 0.32, 1.15, "softmax", QUERY, rotation=90)  # over the answers
    ax.text(0.08, 0.25, "Start, Delim, Extract: added tokens. The last layer's state at Extract "
            "feeds the linear layer.", size=FS, ha="left", va="center", color="0.3")
    return fig


# --- XLNet -----------------------------------------------------------------------------------

def xlnet_panel(ax, x0, query: bool):
    """How position 1 (last in the order) is updated in one stream, from layer m-1 to m."""
    y_low, y_att, y_top = 1.35, 2.25, 3.0
    r, color = 0.19, QUERY if query else FFN
    xs = [x0 + 0.93 + 0.58 * k for k in range(4)]  # positions 1..4
    cx = x0 + 1.55
    box(ax, cx, y_att, 2.6, 0.34, "Attention", ATTN)
    for k, x in enumerate(xs):
        seen = k > 0 or not query
        node(ax, x, y_low, r, rf"$h_{k + 1}$", FFN if seen else GREY, fill=0.25 if seen else 0.08,
             linestyle="-" if seen else "--")
        start = (x + (0.07 if k == 0 else 0), y_low + r)
        end = (cx + (x - cx) * 0.75 + 0.05, y_att - 0.17)
        if seen:
            arrow(ax, start, end, color="0.3")
        else:  # the query stream may not see the token it predicts
            line(ax, [start, end], color=GREY, linestyle="--")
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, "×", size=FS + 5,
                    ha="center", va="center", color=BACK, weight="bold")
        ax.text(x, 0.95, ["4th", "2nd", "1st", "3rd"][k], size=FS, ha="center", va="center")
    ax.text((xs[1] + xs[2]) / 2 + 0.02, 1.82, "K, V", size=FS, ha="center", va="center")
    if query:
        q_x = x0 + 0.35
        node(ax, q_x, y_low, r, "$g_1$", QUERY)
    else:
        q_x = xs[0] - 0.07
    arrow(ax, (q_x, y_low + r), (q_x, y_att - 0.17), color=color, lw=1.4)
    ax.text(q_x - 0.06, 1.82, "Q", size=FS, ha="right", va="center", color=color)
    node(ax, cx, y_top, 0.21, "$g_1$" if query else "$h_1$", color)
    arrow(ax, (cx, y_att + 0.17), (cx, y_top - 0.21))
    return cx


def xlnet_two_streams():
    """XLNet's two-stream attention (Yang et al. 2019, figure 2), for position 1."""
    fig, ax = canvas(7, 4.1, "XLNet's two streams, factorization order 3 → 2 → 4 → 1")
    for label, y in [("layer m", 3.0), ("layer m − 1", 1.35), ("step in\nthe order", 0.95)]:
        ax.text(0.08, y, label, size=FS, ha="left", va="center")
    for x0, query, title in [(0.9, False, "content stream: sees 3, 2, 4 and itself"),
                             (3.95, True, "query stream: sees 3, 2, 4, not itself")]:
        cx = xlnet_panel(ax, x0, query)
        ax.text(cx, 3.5, title, size=FS + 1, ha="center", va="center",
                color=QUERY if query else FFN)
    ax.text(5.8, 3.12, "last layer:", size=FS, ha="left", va="center")
    ax.text(5.8, 2.9, "predicts", size=FS, ha="left", va="center")
    ax.text(5.85 + text_width("predicts"), 2.9, "$x_1$", size=MATH, ha="left", va="center")
    content = "content stream h: knows its token; attends to earlier steps of the order and itself"
    query = "query stream g: knows its position only; attends to earlier steps of the order only"
    for y, color, text in [(0.55, FFN, content), (0.25, QUERY, query)]:
        ax.add_patch(Circle((0.2, y), 0.07, facecolor=light(color), edgecolor=color))
        ax.text(0.35, y, text, size=FS, ha="left", va="center")
    return fig


# --- Transformer-XL --------------------------------------------------------------------------

def transformerxl_memory():
    """Transformer-XL's segment-level recurrence (Dai et al. 2019, figure 2a), one query."""
    fig, ax = canvas(7, 4.1, "Transformer-XL: a segment attends to the cached previous one")
    xs = [1.45 + 0.62 * k + (0.3 if k >= 4 else 0) for k in range(8)]
    ys = [0.95, 1.65, 2.95]  # embeddings, layer 1, layer 2: room for the query's lines
    r, qk, ql = 0.13, 6, 2  # the query: position 7, layer 2
    ax.add_patch(FancyBboxPatch((xs[0] - 0.3, 0.7), xs[3] - xs[0] + 0.6, 2.5, zorder=0,
                                boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=light(GREY, 0.1), edgecolor=light(GREY, 0.4)))
    for layer, y in enumerate(ys):
        ax.text(0.08, y, ["embeddings", "layer 1", "layer 2"][layer], size=FS, ha="left",
                va="center")
        for k, x in enumerate(xs):
            cached = k < 4
            color = BACK if (k, layer) == (qk, ql) else GREY if cached else FFN
            node(ax, x, y, r, color=color, fill=0.15 if cached else 0.35)
    for k in range(qk + 1):  # the query attends to all the memory and to its own past
        ax.add_patch(FancyArrowPatch((xs[k], ys[ql - 1]), (xs[qk], ys[ql]), arrowstyle="-",
                                     color=BACK, shrinkA=r * 72, shrinkB=r * 72, linewidth=1.0))
        ax.text(xs[k], 0.42, str(qk - k), size=FS + 1, ha="center", va="center")
    ax.text(xs[7], 0.42, "masked", size=FS, ha="center", va="center", color="0.3")
    ax.text(0.08, 0.42, "distance i − j", size=FS, ha="left", va="center")
    ax.text(xs[qk], ys[ql] + 0.3, "query i", size=FS, ha="center", va="center", color=BACK)
    ax.text((xs[0] + xs[3]) / 2, 3.55, "segment τ: cached, no gradient", size=FS + 1,
            ha="center", va="center", color="0.3")
    ax.text((xs[4] + xs[7]) / 2, 3.55, "segment τ + 1: current", size=FS + 1, ha="center",
            va="center", color=FFN)
    return fig


DIAGRAMS = {
    "transformer_block": transformer_block,
    "elmo_stack": elmo_stack,
    "bert_input": bert_input,
    "gpt1_inputs": gpt1_inputs,
    "xlnet_two_streams": xlnet_two_streams,
    "transformerxl_memory": transformerxl_memory,
}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder for the SVG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    with style.context("default"), matplotlib.rc_context(RC):
        for name, draw in DIAGRAMS.items():
            path = args.out / f"{name}.svg"
            draw().savefig(path, format="svg", metadata={"Date": None})
            written.append(path)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
