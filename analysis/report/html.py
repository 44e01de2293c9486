"""The report page: one self-contained HTML file (inline CSS, PNGs as base64 data URIs).

A Content-Security-Policy forbids every network fetch, so a page that renders at all renders
from its own bytes. A tiny inline script marks `<body data-images=...>` once the page has loaded:
"ok" when every image decoded (naturalWidth > 0), else "broken: N of M"; the Chromium test reads it.
The only references out of the page are links (navigation, which the policy does not govern) to
the runs in MLflow's UI, written when the sweep's tracking store is a server.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from analysis.report.sections import Cell, Link, Section

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
.warn { background: #fff3f3; border-left: 4px solid #b00020; padding: 0.5rem 1rem; }
.warn li { color: #b00020; }
.note { color: #555; }
.figs { display: flex; flex-wrap: wrap; gap: 0.8rem; }
.figs img { max-width: 100%; border: 1px solid #ddd; }
nav a { margin-right: 1rem; }
"""

CHECK_IMAGES = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  document.body.setAttribute("data-images", bad.length ? "broken: " + bad.length + " of " + imgs.length : "ok");
  document.body.setAttribute("data-image-count", String(imgs.length));
});
"""


def data_uri(png: Path) -> str:
    """The PNG's bytes as a `data:image/png;base64,...` URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def cell(value: Cell) -> str:
    """A table cell's HTML: escaped text, or a link that opens in a new tab (the report may itself be
    shown inside MLflow's UI, in a frame)."""
    if isinstance(value, Link):
        return f'<a href="{html.escape(value.href)}" target="_blank" rel="noopener">{html.escape(value.text)}</a>'
    return html.escape(value)


def render_page(title: str, header: Sequence[tuple[str, Cell]], sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    esc = html.escape
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{cell(v)}</td></tr>" for k, v in header)
    body = "\n".join(_section(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{esc(title)}</title>
<style>{STYLE}</style>
</head>
<body data-images="pending">
<h1>{esc(title)}</h1>
<table class="header">{rows}</table>
<nav>{nav}</nav>
{body}
<script>{CHECK_IMAGES}</script>
</body>
</html>
"""


def _section(s: Section) -> str:
    esc = html.escape
    parts = [f'<section id="{esc(s.anchor)}">', f"<h2>{esc(s.title)}</h2>"]
    if s.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in s.warnings)
        parts.append(f'<div class="warn"><strong>Boundary hits</strong><ul>{items}</ul></div>')
    parts += [f'<p class="note">{esc(n)}</p>' for n in s.notes]
    if s.table:
        head = "".join(f"<th>{cell(c)}</th>" for c in s.table[0])
        rows = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in s.table[1:])
        parts.append(f"<table><tr>{head}</tr>{rows}</table>")
    if s.images:
        imgs = "".join(
            f'<img src="{data_uri(png)}" alt="{esc(alt)}" data-file="{esc(png.name)}">' for png, alt in s.images
        )
        parts.append(f'<div class="figs">{imgs}</div>')
    parts.append("</section>")
    return "\n".join(parts)
