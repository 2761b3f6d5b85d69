"""The pieces of a self-contained HTML page: escaping, tables, figures as data URIs, inline
SVG, and the page itself with its CSS inline. Nothing a page holds is fetched when it is
opened: no scripts, fonts or images from elsewhere."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Sequence
from html import escape

CSS = """
:root { --ink: #1d2329; --muted: #5f6b76; --line: #d9dee3; --bg: #f6f7f9; --accent: #d62728; --ok: #2ca02c; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       background: var(--bg); }
header { background: #1d2329; color: #fff; padding: 18px 32px 14px; }
header h1 { margin: 0 0 4px; font-size: 21px; font-weight: 600; }
header p { margin: 2px 0; color: #c9d1d9; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line); padding: 6px 32px; }
nav a { color: var(--muted); text-decoration: none; margin-right: 16px; font-size: 13px; }
nav a:hover { color: var(--ink); }
main { max-width: 1280px; margin: 0 auto; padding: 8px 32px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 20px 18px; margin: 16px 0; }
h2 { font-size: 17px; margin: 2px 0 10px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); }
p.note, .muted { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; background: #fbfcfd; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .sub { color: var(--muted); font-size: 12px; }
.warn { background: #fff7e6; border: 1px solid #f3d19c; border-radius: 6px; padding: 6px 12px; margin: 8px 0; }
.warn li { margin: 2px 0; }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: right; vertical-align: top; }
th { background: #f0f2f4; font-weight: 600; }
td.text, th.text { text-align: left; }
tr.hi td { background: #fdecea; }
tr.good td { background: #edf7ed; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
figure { margin: 8px 0; }
figure img, figure svg { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; }
.scroll { overflow: auto; max-height: 920px; border: 1px solid var(--line); border-radius: 4px; }
figure.natural svg { max-width: none; }
.drawings { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.drawings figure { flex: 0 1 auto; max-width: 100%; }
td { white-space: nowrap; }
td.text { white-space: normal; }
th.group { text-align: center; border-left: 2px solid #fff; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 4px; padding: 10px; overflow: auto;
      font-size: 12px; }
.bar { display: inline-block; height: 10px; background: var(--accent); vertical-align: middle; }
"""


def esc(value) -> str:
    return escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence], text_columns: Sequence[int] = (0,),
          row_classes: Sequence[str] | None = None) -> str:
    """A table of already formatted cells (strings are escaped; ``Html`` cells are not)."""
    head = "".join(f'<th class="{"text" if i in text_columns else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(f'<td class="{"text" if i in text_columns else ""}">{c if isinstance(c, Html) else esc(c)}</td>'
                        for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Html(str):
    """Markup that is already safe (not escaped again)."""


def share_bar(share: float, width: int = 120) -> Html:
    """A share as a small bar and its percentage."""
    share = max(0.0, min(1.0, share))
    return Html(f'<span class="bar" style="width:{share * width:.0f}px"></span> {share * 100:.1f}%')


def png_figure(fig, caption: str = "", dpi: int = 110) -> str:
    """A matplotlib figure as a PNG data URI in a <figure>."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = esc(caption or "figure")
    caption_html = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{caption_html}</figure>'


def image_figure(data: bytes, mime: str, caption: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    caption_html = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(caption or "figure")}" src="data:{mime};base64,{encoded}">{caption_html}</figure>'


def svg_figure(svg: str, caption: str = "", scroll: bool = True, natural: bool = False) -> str:
    """An SVG document inline (its XML prolog and DOCTYPE dropped); ``natural``: at its own
    size, scrolled rather than shrunk (drawings whose text must stay readable)."""
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S).strip()
    caption_html = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    inner = f'<div class="scroll">{svg}</div>' if scroll else svg
    return f'<figure class="{"natural" if natural else ""}">{inner}{caption_html}</figure>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def warnings_box(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    return '<div class="warn"><b>Read with care</b><ul>' + "".join(f"<li>{esc(w)}</li>" for w in lines) + "</ul></div>"


def page(title: str, subtitle: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page: ``sections`` are (anchor, title, body html)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("frontier-dag")
    except PackageNotFoundError:  # run from a source tree
        __version__ = "(source tree)"
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    lines = "".join(f"<p>{esc(s)}</p>" for s in subtitle)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{lines}</header><nav>{nav}</nav><main>{body}"
            f'<p class="note">Written by frontier-dag {esc(__version__)}; the page holds everything it shows '
            f"(no network access needed).</p></main></body></html>\n")
