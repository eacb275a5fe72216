"""The results page: one offline HTML file (figures inlined) built from every stage's outputs."""
from synthdrive.report.render import render_report

__all__ = ["render_report"]
