"""MkDocs hook: the site is the repository's own Markdown, its links written as GitHub reads them.

MkDocs serves only files under ``docs_dir``, and ``mkdocs build --strict`` fails on a link to any
other file. The leaderboards (``results/``) and the benchmark catalogue (``benchmarks/``) are
generated next to their trial files and must stay there, and the README is the front door on
GitHub. So instead of copying them into ``docs/`` (two copies that drift), this hook

* mounts them into the site unchanged, at the same paths (``on_files``): every file under
  ``results/`` and ``benchmarks/`` at ``results/...`` and ``benchmarks/...``, and ``README.md`` as
  the home page (``index.md``); ``docs/X`` is served at ``X``;
* rewrites each relative Markdown link of every page (``[text](path)`` and ``![alt](path)``)
  from the page's place in the repository to its place in the site (``on_page_markdown``):
  ``docs/performance.md``'s ``../benchmarks/RESULTS.md`` becomes ``benchmarks/RESULTS.md``, the
  README's ``docs/performance.md`` becomes ``performance.md``.

A link is resolved against the real file system first, so every page's links are written for
GitHub (where they work as they are) and then checked by MkDocs: a link to a file that does not
exist, or to a part of the repository the site does not mount (``recbole_metammf/``, ``hyper/``,
...: write those as code, not as links), stays as it is, and ``--strict`` fails on it.
"""

import os
import posixpath
import re

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOUNTED_DIRS = ("results", "benchmarks")   # served whole, at the same paths
HOME = "README.md"                          # served as the site's index.md
DOCS = "docs"                               # docs/X is served at X

# [text](target) or ![alt](target "title"); the target has no spaces (as everywhere in this repo)
_LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_SKIP_DIRS = {"__pycache__", ".pytest_cache"}


def _site_path(repo_path):
    """The site path (a docs-dir relative URI) of a repository path, or None if not served."""
    parts = repo_path.split("/")
    if repo_path == HOME:
        return "index.md"
    if parts[0] == DOCS and len(parts) > 1 and parts[1] != "hooks":
        return "/".join(parts[1:])
    if parts[0] in MOUNTED_DIRS:
        return repo_path
    return None


def on_files(files, config):
    for top in MOUNTED_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(".pyc"):
                    continue
                abs_path = os.path.join(dirpath, name)
                rel = os.path.relpath(abs_path, ROOT).replace(os.sep, "/")
                files.append(File.generated(config, rel, abs_src_path=abs_path))
    files.append(File.generated(config, "index.md", abs_src_path=os.path.join(ROOT, HOME)))
    return files


def _rewrite(target, page_repo_dir, page_site_dir):
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target                      # a URL, an anchor on the same page, an absolute path
    path, sep, fragment = target.partition("#")
    real = posixpath.normpath(posixpath.join(page_repo_dir, path))
    if real.startswith("../"):
        return target                      # outside the repository: let MkDocs judge it
    site = _site_path(real)
    if site is None:
        return target                      # not served: MkDocs reports it under --strict
    new = posixpath.relpath(site, page_site_dir or ".")
    if path.endswith("/") and not new.endswith("/"):
        new += "/"
    return new + sep + fragment


def on_page_markdown(markdown, page, config, files):
    abs_src = page.file.abs_src_path
    if abs_src is None:
        return markdown
    repo_path = os.path.relpath(abs_src, ROOT).replace(os.sep, "/")
    page_repo_dir = posixpath.dirname(repo_path)
    page_site_dir = posixpath.dirname(page.file.src_uri)
    return _LINK.sub(
        lambda m: m.group(1) + _rewrite(m.group(2), page_repo_dir, page_site_dir) + m.group(3),
        markdown,
    )
