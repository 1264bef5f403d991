"""MkDocs hooks (``hooks:`` in mkdocs.yml): publish the repository files the docs link to.

The documentation pages link to committed files outside ``docs/`` — measured results, their
plots, example configs, the committed training data — with ordinary relative paths such as
``../../benchmarks/results/tofu_comparison/tofu_bars.png``, which work when the Markdown is read
in the repository. MkDocs only knows files inside ``docs/``, so at build time this hook

1. adds every file matched by :data:`PUBLISHED` to the site under ``repo/<its repository path>``
   (``on_files``), and
2. rewrites each relative link or image whose target is such a file to that copy
   (``on_page_markdown``).

A rewritten link is then checked by ``mkdocs build --strict`` like any other link. A link to a
repository file that does not exist, or that :data:`PUBLISHED` does not cover, is left as written
and fails the strict build (``validation.links.not_found``).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

#: Repository files published with the site: glob patterns relative to the repository root.
PUBLISHED: tuple[str, ...] = (
    "benchmarks/results/**/*",
    "configs/**/*.yaml",
    "benchmarks/data/*/*.md",
    "benchmarks/data/*/*.json",
)

#: Folder of the site (relative to the docs) that holds the published copies.
SITE_PREFIX = "repo"

# [text](target) and ![alt](target), with an optional "title" after the target.
_LINK = re.compile(r'(?P<head>!?\[[^\]\n]*\]\()(?P<target>[^)\s]+)(?P<tail>(?:\s+"[^"\n]*")?\))')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def published_files(repo_root: Path, patterns: tuple[str, ...] = PUBLISHED) -> list[str]:
    """The repository-relative POSIX paths of the files ``patterns`` match, sorted, no folders."""
    repo_root = Path(repo_root)
    found: set[str] = set()
    for pattern in patterns:
        for path in repo_root.glob(pattern):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add(path.relative_to(repo_root).as_posix())
    return sorted(found)


def rewrite_repo_links(markdown: str, page_src_uri: str, docs_dir: Path, repo_root: Path,
                       published: set[str] | frozenset[str], prefix: str = SITE_PREFIX) -> str:
    """Return ``markdown`` with links to published repository files pointed at their site copies.

    ``page_src_uri`` is the page's path inside the docs (``results/tofu-comparison.md``). A link
    is rewritten when its target is relative, resolves (from the page's source file) to a path
    inside ``repo_root`` but outside ``docs_dir``, and that path is in ``published``; the new
    target is ``<prefix>/<repository path>`` relative to the page, keeping any ``#anchor`` and
    title. Every other link is returned unchanged.
    """
    docs_dir = Path(docs_dir).resolve()
    repo_root = Path(repo_root).resolve()
    page_dir = posixpath.dirname(page_src_uri)
    page_abs_dir = (docs_dir / page_dir).resolve() if page_dir else docs_dir

    def replace(m: re.Match) -> str:
        target = m.group("target")
        if target.startswith(("#", "/")) or _SCHEME.match(target):
            return m.group(0)
        path, sep, anchor = target.partition("#")
        if not path:
            return m.group(0)
        resolved = Path(posixpath.normpath((page_abs_dir / path).as_posix()))
        if resolved.is_relative_to(docs_dir) or not resolved.is_relative_to(repo_root):
            return m.group(0)
        rel = resolved.relative_to(repo_root).as_posix()
        if rel not in published:
            return m.group(0)
        new = posixpath.relpath(f"{prefix}/{rel}", page_dir or ".")
        return m.group("head") + new + sep + anchor + m.group("tail")

    out, fence = [], None
    for line in markdown.splitlines(keepends=True):
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            out.append(line)
            continue
        out.append(line if fence else _LINK.sub(replace, line))
    return "".join(out)


def _repo_root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


_PUBLISHED_NOW: frozenset[str] = frozenset()  # what on_files published in this build


def on_files(files, config):
    """Add every published repository file to the site under ``repo/``."""
    from mkdocs.structure.files import File

    global _PUBLISHED_NOW
    root = _repo_root(config)
    rels = published_files(root)
    for rel in rels:
        files.append(File.generated(config, f"{SITE_PREFIX}/{rel}", abs_src_path=str(root / rel)))
    _PUBLISHED_NOW = frozenset(rels)
    return files


def on_page_markdown(markdown, page, config, files):
    """Point a page's links to published repository files at their copies in the site."""
    return rewrite_repo_links(markdown, page.file.src_uri, Path(config["docs_dir"]),
                              _repo_root(config), _PUBLISHED_NOW)
