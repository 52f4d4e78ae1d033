"""Every code block of README.md and of the documentation pages (``docs/``) runs as written.

The fenced blocks are extracted from README.md and ``docs/*.md`` (with the small budgets they
declare). Shell blocks (``bash``, ``sh``, ``shell``)
run with ``bash -e`` and Python blocks with this environment's interpreter, each in a
subprocess whose working directory is a copy of the repository (so relative paths work
and nothing lands in the checkout), with the environment's ``bin`` first on ``PATH`` and
the copy first on ``PYTHONPATH``. After each block, no file outside ``runs/`` of the
copy may have appeared or changed: the documented commands write under ``runs/`` only.

HTML comments right above a block adjust it for the test:

* ``<!-- readme-test: skip (why) -->``: not run (a full training run, ``make demo``, a
  server); the reason is required;
* ``<!-- readme-test: replace "OLD" "NEW" -->``: run with ``OLD`` replaced by ``NEW``
  (e.g. a smaller ``--timesteps``); ``OLD`` must occur in the block.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The documents whose blocks run: the README and the documentation pages. ``docs/DESIGN.md``
#: is not among them: its fences are layout drawings, with no language and nothing to run.
DOCUMENTS = ["README.md", *sorted(
    str(p.relative_to(ROOT)) for p in [*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "api").glob("*.md")]
    if p.name != "DESIGN.md"
)]
#: The README's length limit: the rest belongs on the documentation pages.
README_MAX_LINES = 300
SHELL_LANGUAGES = ("bash", "sh", "shell")
PYTHON_LANGUAGES = ("python", "py")
#: Fenced blocks that are shown, not run (``yaml`` blocks are parsed instead).
DATA_LANGUAGES = ("yaml", "json", "text")
#: Wall-clock limit of one block, in seconds.
BLOCK_TIMEOUT_S = 600
#: Paths of the copy that a block may write outside ``runs/`` (caches).
IGNORED_PARTS = ("__pycache__", ".pytest_cache", ".venv", "runs")

FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip\s*\((.*)\)$")
REPLACE = re.compile(r'^replace\s+"((?:[^"\\]|\\.)*)"\s+"((?:[^"\\]|\\.)*)"$')


@dataclass
class Block:
    """One fenced code block of a document.

    :param document: the document's path relative to the repository
    :param language: the fence's language tag (``""`` when none)
    :param code: the block's text as written
    :param line: line number (1-based) of the opening fence
    :param directives: the ``readme-test`` directives right above it
    """

    document: str
    language: str
    code: str
    line: int
    directives: list[str] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        """The reason of a ``skip`` directive, or None when the block runs."""
        for directive in self.directives:
            match = SKIP.match(directive)
            if match:
                return match.group(1).strip()
        return None

    @property
    def replacements(self) -> list[tuple[str, str]]:
        """The ``replace`` directives, in order."""
        pairs = []
        for directive in self.directives:
            match = REPLACE.match(directive)
            if match:
                pairs.append(tuple(part.replace('\\"', '"') for part in match.groups()))
        return pairs

    def test_code(self) -> str:
        """The code the test runs: the block with its replacements applied."""
        code = self.code
        for old, new in self.replacements:
            code = code.replace(old, new)
        return code

    @property
    def name(self) -> str:
        """A short test id: document, line, language and first word."""
        words = self.code.split()
        first = re.sub(r"[^A-Za-z0-9_.-]", "", words[0]) if words else "empty"
        return f"{Path(self.document).stem}-L{self.line}-{self.language or 'plain'}-{first}"

    @property
    def where(self) -> str:
        """Document and line of the opening fence, for messages."""
        return f"{self.document} line {self.line}"


def parse_blocks(text: str, document: str = "") -> tuple[list[Block], list[int]]:
    """The fenced blocks of a Markdown text, and the lines of directives attached to no block.

    Directives belong to the block whose opening fence follows them with nothing but
    other directives in between.

    :param text: Markdown
    :param document: the document's path, recorded in each block
    :return: (blocks, line numbers of orphan directives)
    """
    blocks: list[Block] = []
    orphans: list[int] = []
    pending: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        fence = FENCE.match(line)
        if directive:
            pending.append((i + 1, directive.group(1)))
        elif fence:
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(document, fence.group(1).lower(), "\n".join(body) + "\n", start + 1, [d for _, d in pending]))
            pending = []
        else:
            orphans.extend(n for n, _ in pending)
            pending = []
        i += 1
    orphans.extend(n for n, _ in pending)
    return blocks, orphans


BLOCKS: list[Block] = []
ORPHANS: list[str] = []
for _document in DOCUMENTS:
    _blocks, _orphans = parse_blocks((ROOT / _document).read_text(), _document)
    BLOCKS += _blocks
    ORPHANS += [f"{_document} line {n}" for n in _orphans]
RUNNABLE = [b for b in BLOCKS if b.language in SHELL_LANGUAGES + PYTHON_LANGUAGES]


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the details to a page of docs/"


#: The sections the benchmarks write (``--update-docs``): page of ``docs/`` and marker name.
BENCHMARK_SECTIONS = (("energy.md", "energy-table"), ("benchmarks.md", "train-throughput"),
                      ("precision.md", "precision-table"), ("benchmarks.md", "robustness"))


def test_benchmarks_write_into_docs_pages_not_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page, name in BENCHMARK_SECTIONS:
        text = (ROOT / "docs" / page).read_text()
        assert text.count(f"<!-- {name}:begin -->") == 1 and text.count(f"<!-- {name}:end -->") == 1, (page, name)
        assert f"<!-- {name}:begin -->" not in readme, f"README.md still has the {name} section: it is docs/{page}'s"


def test_every_page_is_in_the_site_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return [p for item in nav for p in pages(item)]

    listed = set(pages(config["nav"]))
    on_disk = {str(Path(d).relative_to("docs")) for d in DOCUMENTS if d.startswith("docs/")} | {"DESIGN.md"}
    assert on_disk - listed == set(), "pages of docs/ missing from mkdocs.yml's nav"
    assert listed - on_disk == set(), "mkdocs.yml's nav lists pages that do not exist"


def test_doc_directives_are_well_formed():
    assert any(b.document == "README.md" for b in RUNNABLE), "README.md has no shell or Python block"
    assert not ORPHANS, f"readme-test directives attached to no code block: {ORPHANS}"
    for block in BLOCKS:
        assert block.language in SHELL_LANGUAGES + PYTHON_LANGUAGES + DATA_LANGUAGES, (
            f"block at {block.where}: give the fence a language ({', '.join(SHELL_LANGUAGES + PYTHON_LANGUAGES)}"
            f" to run it, {', '.join(DATA_LANGUAGES)} to show it)"
        )
        for directive in block.directives:
            assert SKIP.match(directive) or REPLACE.match(directive), (
                f"{block.where}: unknown directive {directive!r}: use 'skip (reason)' or 'replace \"old\" \"new\"'"
            )
        if any(d.startswith("skip") for d in block.directives):
            assert block.skip_reason, f"block at {block.where}: a skip needs its reason, skip (why)"
        for old, _ in block.replacements:
            assert old in block.code, f"block at {block.where}: replace {old!r} does not occur in the block"


#: A line that includes a file of the repository into a page (pymdownx.snippets, as the site builds it).
SNIPPET = re.compile(r'^--8<-- "([^":]+)"$', re.M)


def test_doc_yaml_blocks_parse():
    for block in BLOCKS:
        if block.language == "yaml":
            code = SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(), block.code)
            assert isinstance(yaml.safe_load(code), dict), f"yaml block at {block.where}"


@pytest.mark.parametrize("document", [*DOCUMENTS, "docs/DESIGN.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "agents" / "trained").glob("*/README.md")
)])
def test_relative_links_resolve(document):
    """Links and images to files of the repository point to files that exist in it."""
    path = ROOT / document
    text = path.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.exists(), f"{document} links to {target}, which does not exist"
        assert ROOT in resolved.parents, f"{document} links to {target}, outside the repository"


def _source_files() -> list[str]:
    """Tracked and untracked, not ignored, files of the checkout (relative paths)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked archive)
        skipped = (".git", *IGNORED_PARTS, "*.egg-info", "logs", "demo_out")
        return [
            str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not any(fnmatch(part, pattern) for part in p.relative_to(ROOT).parts for pattern in skipped)
        ]
    return [name for name in listed if name and (ROOT / name).is_file()]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of ``root`` outside ``runs/`` and caches."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_PARTS]
        for name in filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """A copy of the checkout with ``.venv`` linked to this environment."""
    copy = tmp_path_factory.mktemp("docs") / "repo"
    for name in _source_files():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (copy / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    _copy_numba_caches(copy)
    return copy


def _copy_numba_caches(copy: Path) -> None:
    """The checkout's compiled numba kernels (``__pycache__/*.nbi``, ``*.nbc``) into the copy.

    Numba keeps a cached kernel while its source file's modification time and size are
    unchanged, and the copy keeps both, so the blocks start without compiling the kernels
    again (about 15 s per fresh copy); a stale cache is recompiled as in the checkout.
    """
    for cache in (ROOT / "spiking_dqn").rglob("__pycache__"):
        target = copy / cache.relative_to(ROOT)
        if not target.parent.is_dir():
            continue
        for name in (*cache.glob("*.nbi"), *cache.glob("*.nbc")):
            target.mkdir(exist_ok=True)
            shutil.copy2(name, target / name.name)


def _environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = sys.prefix
    # The copy's packages, not the checkout's (the editable install points there).
    env["PYTHONPATH"] = str(copy) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTHONSTARTUP", None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_doc_block_runs(block: Block, repo_copy: Path, tmp_path: Path):
    if block.skip_reason:
        pytest.skip(f"{block.where}: {block.skip_reason}")
    code = block.test_code()
    if block.language in PYTHON_LANGUAGES:
        script = tmp_path / f"{Path(block.document).stem}_line_{block.line}.py"
        command = [sys.executable, str(script)]
    else:
        script = tmp_path / f"{Path(block.document).stem}_line_{block.line}.sh"
        command = ["bash", "-e", "-o", "pipefail", str(script)]
    script.write_text(code)
    before = _snapshot(repo_copy)
    try:
        proc = subprocess.run(
            command, cwd=repo_copy, env=_environment(repo_copy), capture_output=True, text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"block at {block.where} ran over {BLOCK_TIMEOUT_S} s:\n{code}")
    output = (proc.stdout[-3000:] + "\n" + proc.stderr[-5000:]).strip()
    assert proc.returncode == 0, (
        f"block at {block.where} failed (exit {proc.returncode}); ran "
        f"{shlex.join(command)} in a copy of the repository:\n{code}\n--- output ---\n{output}"
    )
    after = _snapshot(repo_copy)
    written = sorted(name for name in after if before.get(name) != after[name])
    removed = sorted(set(before) - set(after))
    assert not written and not removed, (
        f"block at {block.where} wrote outside runs/: written {written}, removed {removed}"
    )
