"""Reports: the gapkit-vs-QUIP comparison table and a markdown-table printer."""

from __future__ import annotations


def num(x, fmt: str) -> str:
    """``format(x, fmt)``, or "-" for None and NaN."""
    return "-" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


def print_comparison(rows: list, g: dict | None, q: dict | None, published: dict,
                     pub_fmt: str = ".2f", width: int = 10) -> None:
    """Side-by-side table of a gapkit and a QUIP worker result: ``rows`` of
    ``(label, key, format)``; the ratio column is gapkit/QUIP."""
    g = g if g and g.get("ok") else None
    q = q if q and q.get("ok") else None
    head = (f"{'':30s} {'gapkit':>{width}s} {'QUIP':>{width}s} {'gapkit/QUIP':>12s} "
            f"{'published GAP':>14s}")
    print(head)
    print("-" * len(head))
    for label, key, fmt in rows:
        gv = g.get(key) if g else None
        qv = q.get(key) if q else None
        ratio = gv / qv if (gv is not None and qv) else None
        print(f"{label:30s} {num(gv, fmt):>{width}s} {num(qv, fmt):>{width}s} "
              f"{num(ratio, '.2f'):>12s} {num(published.get(key), pub_fmt):>14s}")


def print_markdown_table(head, rows, align: list[str] | None = None) -> None:
    """A markdown table; without ``align`` the columns are padded to equal widths."""
    rows = [[str(c).replace("|", "/") for c in r] for r in rows]
    if align is not None:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(align) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(str(r[i])) for r in rows + [list(head)]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
