#!/usr/bin/env python3
"""Turns `flashload bench --json-out` files into one SVG bar chart (median GB/s with min-max whiskers).

Usage: bench/plot.py OUT.svg TITLE=results.json [TITLE=results.json ...]
Standard library only.
"""
import json
import sys
from xml.sax.saxutils import escape

COLORS = {"limit": "#9e9e9e", "flashload": "#1565c0", "baseline": "#ef6c00"}


def rows_of(title, path):
    with open(path) as f:
        data = json.load(f)
    rows = []
    for phase in data["phases"]:
        label = phase["phase"].split(" ")[0]
        for m in phase["methods"]:
            rows.append((f"{title} {label}: {m['name']}", m["role"], m["median_gbps"],
                         m["min_gbps"], m["max_gbps"]))
    return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    rows = []
    for arg in sys.argv[2:]:
        title, _, path = arg.partition("=")
        rows += rows_of(title, path)
    top = max(r[4] for r in rows) or 1.0
    label_w, bar_w, row_h = 470, 430, 22
    height = 40 + row_h * len(rows)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">Load throughput, GB/s (median, min–max whiskers)</text>']
    for i, (name, role, med, lo, hi) in enumerate(rows):
        y = 34 + i * row_h
        scale = bar_w / top
        svg.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(name)}</text>')
        svg.append(f'<rect x="{label_w}" y="{y + 3}" width="{med * scale:.1f}" height="{row_h - 8}" '
                   f'fill="{COLORS.get(role, "#555")}"/>')
        svg.append(f'<line x1="{label_w + lo * scale:.1f}" x2="{label_w + hi * scale:.1f}" '
                   f'y1="{y + row_h / 2}" y2="{y + row_h / 2}" stroke="black"/>')
        svg.append(f'<text x="{label_w + hi * scale + 6:.1f}" y="{y + 14}">{med:.2f}</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
