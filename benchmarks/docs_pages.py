"""Where the benchmarks write their tables: sections of the documentation pages, never the README.

A page (``docs/<page>.md``) marks each section a benchmark writes with ``<!-- name:begin -->``
and ``<!-- name:end -->`` (the model cards' marker rule, ``replace_card_section``). Figures are
linked as ``benchmarks/results/<file>``: the same path from the repository root and, through
the link ``docs/benchmarks -> ../benchmarks``, from the pages and the built site.
"""

from __future__ import annotations

import os
from pathlib import Path

from spiking_dqn.recipes.card import replace_card_section

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def update_page(page: str, name: str, body: str) -> Path:
    """Write ``body`` into ``docs/<page>`` between its ``name`` markers.

    :param page: the page's file name in ``docs/`` (``"energy.md"``)
    :param name: the section's marker name
    :param body: the section's Markdown, without the markers
    :return: the page's path
    :raises ValueError: when the page lacks the markers (a benchmark never appends to a page)
    """
    path = DOCS / page
    text = path.read_text() if path.exists() else ""
    if f"<!-- {name}:begin -->" not in text or f"<!-- {name}:end -->" not in text:
        raise ValueError(f"{path} has no <!-- {name}:begin/end --> markers to write between")
    replace_card_section(path, name, body)
    return path


def figure_links(out: Path, figures: list[tuple[str, str]]) -> str:
    """Markdown images of those ``(alt text, file name)`` of ``out`` that exist, linked from the repository root."""
    return "".join(f"![{alt}]({Path(os.path.relpath(out / name, ROOT)).as_posix()})\n"
                   for alt, name in figures if (out / name).exists())
