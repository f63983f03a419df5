"""The docs site (issue 22 item 6): `mkdocs build --strict` passes, so a link to a missing page or
anchor, a page left out of the nav or a nav entry without its page fails `make test`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import yaml

from tests.support.common import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def nav_pages(nav) -> list[str]:
    """Every page named in a (nested) mkdocs nav."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in nav_pages(v)]
    return [p for item in nav for p in nav_pages(item)]


def load_config() -> dict:
    # mkdocs.yml holds `!relative` and `!!python/...` tags: read it with tags ignored, for the nav
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, tag, node: None)
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, tag, node: None)
    return yaml.load((REPO_ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_the_nav_names_every_page_once_and_only_pages_that_exist():
    pages = nav_pages(load_config()["nav"])
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(pages)) == sorted(pages), "a page is in the nav twice"
    assert sorted(pages) == on_disk


def build(root, site) -> tuple[int, str]:
    """`mkdocs build --strict` of the site whose mkdocs.yml is in ``root``: (status, its log)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's banner about MkDocs 2
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_site_builds_strict(tmp_path):
    """The build the site's readers get, with every warning an error (mkdocs.yml's `validation`
    makes broken links, missing anchors and pages outside the nav warnings)."""
    code, log = build(REPO_ROOT, tmp_path / "site")
    assert code == 0, log
    assert not re.search(r"^(WARNING|ERROR)\b", log, flags=re.M), log
    # the README's "How it works" table is included into the overview page, not copied
    page = (tmp_path / "site" / "how-it-works" / "index.html").read_text()
    assert "<code>dualpatch/data/</code>" in page and "--8&lt;--" not in page


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The check bites: the same site with one link to a missing anchor does not build."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "ksdd2.md").write_text((docs / "ksdd2.md").read_text() + "\n[x](results.md#nowhere)\n")
    for name in ("mkdocs.yml", "README.md"):  # the README: its table is included in a page
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    code, log = build(tmp_path, tmp_path / "site")
    assert code != 0 and "#nowhere" in log, log
