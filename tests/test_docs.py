"""The documentation site keeps up with the package: every public name has its reference, every page
and example is reachable. (`mkdocs build --strict` in .ci/run checks the rest: docstrings against
signatures, links, the README headings the guide includes.) Static reads only, no mkdocs needed."""

import ast
import re
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
DOCS = REPOSITORY / "docs"


def declared_all(path: Path) -> list[str] | None:
    """The names a module's ``__all__ = [...]`` lists, read without importing it; None without one."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "__all__" for target in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]
    return None


def nav_pages(nav) -> list[str]:
    """Every page file the mkdocs.yml ``nav`` lists, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def site_config() -> dict:
    return yaml.safe_load((REPOSITORY / "mkdocs.yml").read_text())


def test_every_public_subpackage_has_a_reference_page_in_the_nav():
    pages = set(nav_pages(site_config()["nav"]))
    package = REPOSITORY / "aevb"
    subpackages = sorted(package.glob("*/__init__.py"))
    modules = [path for path in sorted(package.glob("*.py")) if path.name != "__init__.py"]
    public = [
        path.parent.name if path.name == "__init__.py" else path.stem
        for path in subpackages + modules
        if declared_all(path) is not None
    ]
    assert {"data", "models", "training", "runs"} <= set(public)  # the reading of __all__ finds them
    for name in public:
        page = f"reference/{name}.md"
        assert page in pages, f"aevb.{name} has __all__ but no {page} in mkdocs.yml's nav"
        assert re.search(rf"^::: aevb\.{name}$", (DOCS / page).read_text(), re.MULTILINE), page


def test_the_package_page_links_every_top_level_name_to_its_reference():
    page = (DOCS / "reference" / "aevb.md").read_text()
    for name in declared_all(REPOSITORY / "aevb" / "__init__.py"):
        assert re.search(rf"^\| `{re.escape(name)}` \|", page, re.MULTILINE), f"aevb.{name} is not in reference/aevb.md"


def test_every_page_is_in_the_nav_and_every_example_is_shown_on_one():
    config = site_config()
    pages = set(nav_pages(config["nav"]))
    excluded = [line.strip() for line in config["exclude_docs"].splitlines() if line.strip()]
    written = {
        path.relative_to(DOCS).as_posix()
        for path in DOCS.rglob("*.md")
        if not any(path.relative_to(DOCS).as_posix().startswith(prefix) for prefix in excluded)
    }
    assert written == pages
    example_pages = "".join((DOCS / page).read_text() for page in pages if page.startswith("examples/"))
    for script in sorted((REPOSITORY / "examples").glob("*.py")):
        assert f'--8<-- "examples/{script.name}"' in example_pages, f"{script.name} is on no example page"


def test_every_readme_section_is_included_in_the_guide():
    headings = re.findall(r"^## (.+)$", (REPOSITORY / "README.md").read_text(), re.MULTILINE)
    included = {
        start
        for page in [DOCS / "index.md", *sorted((DOCS / "guide").glob("*.md"))]
        for start in re.findall(r'^\s*start="## (.+)"$', page.read_text(), re.MULTILINE)
    }
    # The first section is the home page's, which includes README from its beginning.
    missing = [heading for heading in headings[1:] if heading not in included]
    assert not missing, f"README sections on no guide page (docs/guide/, mkdocs.yml's nav): {missing}"
