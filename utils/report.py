"""A self-contained HTML report: one file, images embedded, no network needed.

A chapter hands over a title and a list of sections; each section is a
heading plus HTML made with the small helpers below.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #e24a33; } h2 { margin-top: 1.6em; color: #444; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 13px; }
pre.full { white-space: pre-wrap; overflow-wrap: anywhere; width: max-content; max-width: 100%; }
img { max-width: 100%; margin: 6px; border: 1px solid #ddd; } .images { display: flex; flex-wrap: wrap; }
"""


def image(path: Path | str, alt: str = "") -> str:
    """An <img> whose PNG bytes are inside the tag, so the report travels alone."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt or Path(path).stem)}" src="data:image/png;base64,{data}">'


def images(paths) -> str:
    return '<div class="images">' + "".join(image(p) for p in paths if Path(p).is_file()) + "</div>"


def table(rows: list[dict]) -> str:
    """Rows of equal keys as an HTML table; numbers are right-aligned."""
    if not rows:
        return "<p>(nothing)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = ""
    for row in rows:
        cells = ""
        for value in row.values():
            if isinstance(value, float):
                cells += f'<td class="num">{value:.4f}</td>'
            elif isinstance(value, int):
                cells += f'<td class="num">{value:,}</td>'
            else:
                cells += f"<td>{html.escape(str(value))}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def key_values(mapping: dict) -> str:
    return table([{"name": k, "value": v} for k, v in mapping.items()])


def preformatted(text: str) -> str:
    """Text as it was printed; long lines wrap instead of vanishing at the box's edge."""
    return f'<pre class="full">{html.escape(text)}</pre>'


def model_summary(model, line_length: int = 100) -> str:
    """``model.summary()`` as text, every column whole (the "Param #" column included).

    Keras draws the table with rich, which crops it to the console's width (80
    columns when the output is not a terminal); the width is raised for the call.
    """
    import contextlib
    import io
    import os

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(max(line_length + 20, 120))
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            model.summary(line_length=line_length)
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return buffer.getvalue()


def write_report(path: Path | str, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write the report; ``sections`` is a list of (heading, html body)."""
    parts = [f"<h2>{html.escape(heading)}</h2>\n{body}" for heading, body in sections]
    page = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
