"""Project rules as tests: lifecycle stays free of Streamlit, every page is navigable, config is safe."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_lifecycle_imports_without_streamlit():
    code = ("import sys, pkgutil, importlib, lifecycle\n"
            "for m in pkgutil.iter_modules(lifecycle.__path__):\n"
            "    if m.name != '__main__': importlib.import_module('lifecycle.' + m.name)\n"
            "assert 'streamlit' not in sys.modules, 'streamlit imported'\n")

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr


def _navigation_pages() -> set[str]:
    tree = ast.parse((ROOT / "app.py").read_text())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page"}


def test_every_page_file_is_listed_in_the_navigation():
    files = {f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")}

    assert files == _navigation_pages()


def test_pages_stay_thin_and_hold_no_sql():
    for page in (ROOT / "pages").glob("*.py"):
        text = page.read_text()
        assert len(text.splitlines()) <= 150, page.name
        assert "duckdb" not in text and "SELECT " not in text, page.name


def test_xsrf_protection_stays_on_and_uploads_are_capped():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())

    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["maxUploadSize"] < 200


def test_no_page_renders_raw_html():
    for path in [*ROOT.glob("pages/*.py"), ROOT / "ui.py", ROOT / "app.py"]:
        assert "unsafe_allow_html=True" not in path.read_text(), path.name
