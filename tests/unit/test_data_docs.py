"""GX Data Docs that render offline (features/data_docs.py): the pages load their scripts and stylesheets
from copies in the site, the npm packages of the versions GX's templates name (vendor/data-docs/)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import great_expectations
import pytest
import yaml

import features.data_docs as data_docs
from features.data_docs import ASSET_FOLDERS, CDN_ASSETS, localize_data_docs
from features.validate import validate_rows
from tests.flows.browser_ui import UI_WAIT_MS, browser  # noqa: F401 (browser: the fixture)
from tests.unit.test_validate import PARAMS, make_clean_rows

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATES = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
PACKAGE_JSON = PROJECT / "vendor" / "data-docs" / "package.json"
# Where a page loads a script or stylesheet: <script src=…> and <link href=…>, as GX's templates write them.
ASSET_TAG = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)=\"([^\"]+)\"[^>]*>")
INTEGRITY = re.compile(r'(?:src|href)="([^"]+)"[^>]*\bintegrity="(sha384-[^"]+)"')


def remote_asset_urls(html: str) -> set[str]:
    return {url for url in ASSET_TAG.findall(html) if url.startswith(("http:", "https:", "//"))}


def installed_assets() -> Path:
    """The npm copies `make install` puts in place; skipped only where npm is missing (then so are they)."""
    if not data_docs.ASSETS_DIR.is_dir():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed, so `make install` could not install the Data Docs assets")
        pytest.fail(f"{data_docs.ASSETS_DIR} is missing: run `make install` (npm ci of vendor/data-docs)")
    return data_docs.ASSETS_DIR


@pytest.fixture
def fake_assets(tmp_path: Path) -> Path:
    """Every asset file, a few bytes each: enough to check the rewriting without npm."""
    root = tmp_path / "node_modules"
    for asset in CDN_ASSETS.values():
        (root / asset.package / asset.file).parent.mkdir(parents=True, exist_ok=True)
        (root / asset.package / asset.file).write_text(f"/* {asset.file} */")
    for folder in ASSET_FOLDERS:
        (root / folder.package / folder.file).mkdir(parents=True, exist_ok=True)
        (root / folder.package / folder.file / "font.woff2").write_bytes(b"\0font")
    return root


def site_of(gx_dir: Path) -> Path:
    return gx_dir / "uncommitted" / "data_docs" / "local_site"


def test_every_script_and_stylesheet_gx_loads_from_a_cdn_has_a_local_copy():
    """A GX upgrade that loads a new file (or another version) from a CDN fails here, not offline in a browser."""
    asked = set().union(*(remote_asset_urls(t.read_text()) for t in TEMPLATES.glob("*.j2")))
    assert asked == set(CDN_ASSETS), f"not copied: {sorted(asked - set(CDN_ASSETS))}; stale: {sorted(set(CDN_ASSETS) - asked)}"


def test_package_json_pins_the_versions_the_cdn_urls_name():
    pins = json.loads(PACKAGE_JSON.read_text())["dependencies"]
    for url, asset in CDN_ASSETS.items():
        pin = pins[asset.package].rsplit("@", 1)[-1]  # "npm:bootstrap-table@1.19.0" is an alias of that version
        named = re.search(r"(?:@|/|-)(\d+(?:\.\d+)*)(?=/|\.min|$)", url).group(1)
        assert pin == named or (named.count(".") < 2 and pin.startswith(f"{named}.")), (url, pin)
    assert set(pins) == {asset.package for asset in CDN_ASSETS.values()}


def test_the_npm_copies_are_the_bytes_the_cdns_serve():
    """GX pins two of its CDN files by subresource-integrity hash; the npm packages' files have the same hashes."""
    assets = installed_assets()
    pinned = dict(INTEGRITY.findall((TEMPLATES / "js_script_imports.j2").read_text()))
    assert len(pinned) == 2  # popper.js and bootstrap.js
    for url, integrity in pinned.items():
        asset = CDN_ASSETS[url]
        digest = hashlib.sha384((assets / asset.package / asset.file).read_bytes()).digest()
        assert f"sha384-{base64.b64encode(digest).decode()}" == integrity, url


def test_each_page_loads_its_scripts_from_the_site_and_tells_gx_nothing(tmp_path, fake_assets, monkeypatch):
    monkeypatch.setattr(data_docs, "ASSETS_DIR", fake_assets)
    gx_dir = tmp_path / "gx"
    rows = make_clean_rows()
    rows.loc[1, "label"] = 12
    validate_rows(rows, gx_dir, PARAMS, batch_id="b1")
    validate_rows(make_clean_rows(), gx_dir, PARAMS, batch_id="b2")  # a second build: its new page too

    site = site_of(gx_dir)
    assert {p.parent.parent.name for p in site.glob("validations/clean_rows/*/*/*.html")} == {"b1", "b2"}
    context_id = yaml.safe_load((gx_dir / "great_expectations.yml").read_text())["data_context_id"]
    for page in sorted(site.rglob("*.html")):
        html = page.read_text()
        assert remote_asset_urls(html) == set(), page
        local = [url for url in ASSET_TAG.findall(html) if "static/vendor/" in url]
        assert len(local) == 15, page  # each of the page's 10 scripts and 5 stylesheets
        assert all((page.parent / url).is_file() for url in local), page  # relative to the page: the site moves whole
        assert 'integrity="' not in html and "crossorigin" not in html  # a file:// page gets no CORS answer
        assert context_id not in html  # the logo is the site's own copy, not GX's S3 bucket with this id
        (logo,) = re.findall(r'<img[^>]+src="([^"]*logo-long\.png)"', html)
        assert (page.parent / logo).is_file(), page
    font = site / "static" / "vendor" / "@fortawesome" / "fontawesome-free" / "webfonts" / "font.woff2"
    assert font.is_file()  # all.min.css loads its fonts relative to itself
    assert localize_data_docs(site, fake_assets) == []  # nothing left to rewrite


def test_without_the_npm_copies_pages_keep_their_cdn_links_and_a_warning_says_how_to_install(
    tmp_path, fake_assets, monkeypatch, caplog
):
    monkeypatch.setattr(data_docs, "ASSETS_DIR", tmp_path / "never-installed")
    gx_dir = tmp_path / "gx"
    with caplog.at_level("WARNING", logger="flywheel.data_docs"):
        outcome = validate_rows(make_clean_rows(), gx_dir, PARAMS, batch_id="b1")  # validation is unaffected
    assert outcome.failed == {}
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "flywheel.data_docs"]  # once, not per page
    assert "public CDNs" in warning and "make install" in warning and "never-installed" in warning
    site = site_of(gx_dir)
    assert all(remote_asset_urls(p.read_text()) for p in site.rglob("*.html"))
    assert not (site / "static" / "vendor").exists()

    rewritten = localize_data_docs(site, fake_assets)  # once installed, the next build mends the older pages
    assert {p.name for p in rewritten} == {"index.html", "clean_rows.html", "flywheel-clean_rows.html"}
    assert not any(remote_asset_urls(p.read_text()) for p in site.rglob("*.html"))


def test_a_gx_upgrade_that_loads_an_unknown_script_is_named_in_a_warning(tmp_path, fake_assets, caplog):
    site = tmp_path / "site"
    page = site / "index.html"
    page.parent.mkdir(parents=True)
    known = next(iter(CDN_ASSETS))
    page.write_text(f'<html><head><script src="{known}"></script><script src="https://cdn.example/new@2.js"></script>'
                    "</head><body></body></html>")
    with caplog.at_level("WARNING", logger="flywheel.data_docs"):
        assert localize_data_docs(site, fake_assets) == [page]
    html = page.read_text()
    assert known not in html and "https://cdn.example/new@2.js" in html
    assert any("https://cdn.example/new@2.js" in r.getMessage() for r in caplog.records)
    caplog.clear()
    newer = site / "validations" / "page.html"  # a newer GX that loads nothing this module knows
    newer.parent.mkdir()
    newer.write_text('<html><head><script src="https://cdn.example/other@3.js"></script></head></html>')
    with caplog.at_level("WARNING", logger="flywheel.data_docs"):
        assert localize_data_docs(site, fake_assets) == []  # nothing to point elsewhere, but said
    assert any("https://cdn.example/other@3.js" in r.getMessage() for r in caplog.records)


# --- in a browser, with the network off --------------------------------------------------------------------


@pytest.fixture
def offline_page(browser, tmp_path):  # noqa: F811
    """A page whose every request other than file:// and localhost is aborted; the aborted URLs are kept."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []

    def only_local(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "http://127.0.0.1", "http://localhost")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", only_local)
    context.set_default_timeout(UI_WAIT_MS)  # the page's waits, and any for a new tab, bounded alike on a busy machine
    page = context.new_page()
    page.blocked = blocked
    yield page
    page.screenshot(path=str(tmp_path / "last_page.png"), full_page=True)  # left for a failing run's reader
    context.close()


def test_a_validation_result_renders_offline_with_its_results_table(tmp_path, offline_page):
    """Index → the run's result page, network off: the tables bootstrap-table draws are there, with rows, and the
    status cells show font-awesome's pass and fail icons (without the copies the index table is empty and the
    status cells blank)."""
    installed_assets()
    gx_dir = tmp_path / "gx"
    rows = make_clean_rows()
    rows.loc[1, "label"] = 12  # one failing expectation: a fail cell beside the passing ones
    outcome = validate_rows(rows, gx_dir, PARAMS, batch_id="b1")
    page = offline_page

    page.goto(outcome.data_docs.as_uri())
    run_row = page.locator(".bootstrap-table tbody tr", has_text="b1")
    run_row.wait_for()
    assert run_row.locator("i.fa-times").is_visible()  # the run failed one expectation
    run_row.get_by_text("b1", exact=True).click()  # a row links to its result page

    page.wait_for_url(re.compile(r"/validations/clean_rows/b1/.+\.html$"))
    results = page.locator(".bootstrap-table table", has=page.locator("th", has_text="Observed Value"))
    results.first.wait_for()
    assert results.count() > 5  # one per column of the clean table
    assert results.first.locator("tbody tr").count() >= 1
    passed = results.locator("td i.fa-check-circle").first
    failed = results.locator("td i.fa-times").first  # label 12 is not a class
    for icon in (passed, failed):
        icon.scroll_into_view_if_needed()
        assert icon.is_visible()
        box = icon.bounding_box()
        assert box and box["width"] > 4 and box["height"] > 4  # a glyph, not an empty <i>
    assert page.evaluate("document.fonts.check('900 16px \"Font Awesome 6 Free\"')")
    glyph = page.evaluate("getComputedStyle(document.querySelector('td i.fa-check-circle'), '::before').content")
    assert glyph not in ("none", "normal", "")  # font-awesome's stylesheet is loaded
    assert page.blocked == []  # nothing was even asked of the network
