"""The self-contained HTML report of a reproduction (figures embedded, responsive CSS)."""

from .html import write_report

__all__ = ["write_report"]
