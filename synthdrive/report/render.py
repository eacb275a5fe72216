"""Render the report page: sections -> jinja2 templates -> one self-contained HTML file."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import jinja2
from markupsafe import Markup

from synthdrive.report import provenance
from synthdrive.report.sections import Inputs, build


def _environment(root: Path, out: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("synthdrive.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)

    def href(source: str) -> str:
        """A link from the page to a repo file (relative, so it works wherever the repo is)."""
        return Path(os.path.relpath(root / source, out.parent)).as_posix()

    def num(value, source: str, digits: int = 3) -> Markup:
        """A number that links to (and names, on hover) the file it came from."""
        if value is None:
            return Markup('<span class="na">n/a</span>')
        if isinstance(value, float):
            text = f"{value:.{digits}f}"
        else:
            text = f"{value}"
        return Markup('<a class="num" href="{}" title="from {}">{}</a>').format(href(source), source, text)

    env.globals.update(num=num, href=href)
    return env


def render_report(root: Path, out: Path, cfg: dict, parent_run: str | None = None) -> dict:
    """Write ``out`` (atomically) from the outputs under ``root``; returns what was included."""
    root, out = Path(root).resolve(), Path(out).resolve()
    sections, left_out = build(Inputs(root, cfg, parent_run))
    html = _environment(root, out).get_template("report.html").render(
        sections=sections, left_out=left_out, rev=provenance.revision(root),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return {"sections": [s.name for s in sections], "left_out": left_out, "bytes": len(html.encode())}
