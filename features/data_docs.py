"""GX Data Docs that render offline: the pages load their scripts and stylesheets from local copies.

GX 1.24's page templates (great_expectations/render/view/templates/page.j2, index_page.j2,
js_script_imports.j2) load jQuery, Bootstrap, bootstrap-table, vega and font-awesome from public CDNs,
and bootstrap-table draws the results tables: offline they stay empty. GX's site builder cannot be told
otherwise (a custom views folder is searched after GX's own templates), so after each build the pages
are rewritten: `localize_data_docs` copies the npm packages of the same versions
(`vendor/data-docs/package.json`, installed by `make install`) into the site's `static/vendor/` and
points every page at them, with paths relative to the page, so the site still opens from the disk and
can be moved or zipped whole. The navbar logo, which GX loads from its S3 bucket with the data context id
appended, points at the copy GX already puts in the site's `static/images/`.

Without the copies (npm missing at install) the pages keep their CDN links and a warning says so:
the validation itself is unaffected, and online the pages render as GX built them.
"""

from __future__ import annotations

import functools
import html as html_text
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from features.atomic import atomic_copy, atomic_write_text

logger = logging.getLogger("flywheel.data_docs")

# `make install` fills it, in the checkout the editable install runs from (a wheel install has no copies: CDN links).
ASSETS_DIR = Path(__file__).resolve().parents[1] / "vendor" / "data-docs" / "node_modules"
VENDOR_DIR = Path("static") / "vendor"  # under the site root: one folder per npm package


@dataclass(frozen=True)
class Asset:
    package: str  # folder under node_modules (an npm alias for a second version of a package)
    file: str  # path inside the package


# Every script and stylesheet GX 1.24.1's templates load from a CDN -> the same file in the npm package of that
# version. tests/unit/test_data_docs.py checks that no template asks for a URL missing here.
CDN_ASSETS: dict[str, Asset] = {
    "https://cdn.jsdelivr.net/npm/vega@5": Asset("vega", "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": Asset("vega-lite", "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": Asset("vega-embed", "build/vega-embed.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        Asset("@fortawesome/fontawesome-free", "css/all.min.css"),
    "https://code.jquery.com/jquery-3.7.1.min.js": Asset("jquery", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        Asset("popper.js", "dist/umd/popper.min.js"),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": Asset("bootstrap", "dist/js/bootstrap.min.js"),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": Asset("bootstrap", "dist/css/bootstrap.min.css"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        Asset("bootstrap-table", "dist/bootstrap-table.min.js"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        Asset("bootstrap-table", "dist/bootstrap-table.min.css"),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        Asset("bootstrap-table", "dist/extensions/filter-control/bootstrap-table-filter-control.min.js"),
    # The filter-control stylesheet comes from 1.19.0 in GX's templates, the minified one on the index page only.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        Asset("bootstrap-table-1.19.0", "dist/extensions/filter-control/bootstrap-table-filter-control.css"),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        Asset("bootstrap-table-1.19.0", "dist/extensions/filter-control/bootstrap-table-filter-control.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        Asset("bootstrap-datepicker", "dist/js/bootstrap-datepicker.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        Asset("bootstrap-datepicker", "dist/css/bootstrap-datepicker.min.css"),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        Asset("@forevolve/bootstrap-dark", "dist/css/bootstrap-prefers-dark.css"),
}
# Folders a stylesheet above loads relative to itself (font-awesome's `url(../webfonts/…)`).
ASSET_FOLDERS = (Asset("@fortawesome/fontawesome-free", "webfonts"),)

# GX's navbar logo: its S3 bucket, with `?d=<time>&dataContextId=<id>` appended (a request per page view).
_GX_IMAGE_URL = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)(\?[^\"']*)?")
_ASSET_TAG = re.compile(r"<(?:script|link)\b[^>]*>")
_URL_ATTRIBUTE = re.compile(r'\b(src|href)="(https?://[^"]+)"')
# Subresource integrity needs a CORS response, which a file:// page never gets, so the browser would refuse
# the local copy; the copies are the CDN's bytes (the test compares them with these hashes).
_CORS_ATTRIBUTES = re.compile(r'\s+(?:integrity|crossorigin)="[^"]*"')
_HEAD_END = "</head>"
_HEAD_READ_LIMIT = 1 << 20  # a page's <head> is a few KB; stop looking after this much
_SWEPT_STAMP = ".swept"  # in static/vendor/: its mtime is when the last sweep of the pages began
_MTIME_SLACK_S = 2.0  # file systems whose timestamps are coarser than the clock


# The banner a run's validation page gets at the end of the run, linking the other UIs; replaced whole on a rerun.
LINKS_START, LINKS_END = "<!-- flywheel links -->", "<!-- /flywheel links -->"
_FIRST_SECTION = '<div id="section-1"'  # the results column's first section: the banner goes above it
_BODY_TAG = re.compile(r"<body\b[^>]*>")


def link_other_uis(page: Path, run_id: str, links: Sequence[tuple[str, str]]) -> bool:
    """Put a banner at the top of Data Docs page `page` that links where the other UIs show flywheel run
    `run_id` (`links`: (label, URL) pairs, in order), in place of an earlier one. GX writes a validation's page
    once and rebuilds only the index and new pages, so the banner stays. Returns whether the page changed;
    a missing page, or no links, changes nothing."""
    if not links or not page.is_file():
        return False
    original = text = page.read_text(encoding="utf-8")
    if LINKS_START in text and LINKS_END in text:
        head, _, rest = text.partition(LINKS_START)
        text = head + rest.partition(LINKS_END)[2]
    anchors = " · ".join(f'<a href="{html_text.escape(url, quote=True)}">{html_text.escape(label)}</a>'
                         for label, url in links)
    banner = (f'{LINKS_START}<div id="flywheel-links" class="alert alert-info mb-3">This flywheel run '
              f"(<code>{html_text.escape(run_id)}</code>) in the other UIs: {anchors}</div>{LINKS_END}")
    at = text.find(_FIRST_SECTION)
    if at < 0:
        body = _BODY_TAG.search(text)
        at = body.end() if body else 0
    changed = text[:at] + banner + text[at:]
    if changed == original:
        return False
    atomic_write_text(page, changed)
    return True


def localize_data_docs(site_dir: Path, assets_dir: Path | None = None) -> list[Path]:
    """Point the Data Docs pages under `site_dir` at local copies of their CDN scripts and stylesheets.

    Copies the assets from `assets_dir` (default: `ASSETS_DIR`, the npm install) into `site_dir/static/vendor/`,
    then rewrites each page written since the last call that still loads one from a CDN; returns the pages
    rewritten. When the copies are missing, logs a warning, changes nothing and returns [].
    """
    assets_dir = assets_dir or ASSETS_DIR
    missing = [asset for asset in _all_assets() if not (assets_dir / asset.package / asset.file).exists()]
    if missing:
        _warn_missing_assets(assets_dir, tuple(f"{a.package}/{a.file}" for a in missing))
        return []
    _copy_assets(assets_dir, site_dir / VENDOR_DIR)
    stamp = site_dir / VENDOR_DIR / _SWEPT_STAMP
    started = time.time()
    # Pages GX wrote since the last sweep began (all of them on the first): a site of 1,000 pages costs 0.6 s
    # to read the heads of, and GX rebuilds only the index and the new result's pages.
    since = stamp.stat().st_mtime - _MTIME_SLACK_S if stamp.exists() else float("-inf")
    rewritten = []
    for page in sorted(site_dir.rglob("*.html")):
        if page.stat().st_mtime < since or not _loads_remote_assets(_read_head(page)):
            continue
        html = page.read_text(encoding="utf-8")
        text, unknown = rewrite_page(html, Path(os.path.relpath(site_dir, page.parent)), site_dir)
        if unknown:
            _warn_unknown_urls(tuple(unknown))
        if text != html:
            atomic_write_text(page, text)
            rewritten.append(page)
    stamp.touch()
    os.utime(stamp, (started, started))
    return rewritten


def rewrite_page(html: str, to_site: Path, site_dir: Path) -> tuple[str, list[str]]:
    """The page with each CDN script and stylesheet of `CDN_ASSETS` loaded from `static/vendor/` (`to_site`: the
    site root relative to the page's folder) and GX's S3 images from the site's `static/images/` where a copy is
    there; also the scripts and stylesheets it still loads from elsewhere (a GX upgrade's new ones)."""
    unknown: list[str] = []

    def local_tag(match: re.Match[str]) -> str:
        tag = match.group(0)
        attribute = _URL_ATTRIBUTE.search(tag)
        if attribute is None:
            return tag
        asset = CDN_ASSETS.get(attribute.group(2))
        if asset is None:
            unknown.append(attribute.group(2))
            return tag
        local = (to_site / VENDOR_DIR / asset.package / asset.file).as_posix()
        return _CORS_ATTRIBUTES.sub("", tag.replace(attribute.group(0), f'{attribute.group(1)}="{local}"'))

    def local_image(match: re.Match[str]) -> str:
        name = match.group(1)
        if not (site_dir / "static" / "images" / name).is_file():
            return match.group(0)  # e.g. the dark-mode logo, which GX does not ship
        return (to_site / "static" / "images" / name).as_posix()

    html = _ASSET_TAG.sub(local_tag, html)
    return _GX_IMAGE_URL.sub(local_image, html), unknown


def _all_assets() -> list[Asset]:
    return [*dict.fromkeys(CDN_ASSETS.values()), *ASSET_FOLDERS]


def _copy_assets(assets_dir: Path, vendor_dir: Path) -> None:
    """Copy each asset file (and each file of an asset folder) that the site lacks or holds in another size."""
    for asset in _all_assets():
        source = assets_dir / asset.package / asset.file
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for file in files:
            target = vendor_dir / asset.package / file.relative_to(assets_dir / asset.package)
            if not target.is_file() or target.stat().st_size != file.stat().st_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_copy(file, target)


def _loads_remote_assets(html: str) -> bool:
    return any(_URL_ATTRIBUTE.search(tag) for tag in _ASSET_TAG.findall(html))


def _read_head(page: Path) -> str:
    """The page up to the end of its <head> (where the templates put every script and stylesheet)."""
    with page.open(encoding="utf-8", errors="replace") as handle:
        head = ""
        while _HEAD_END not in head and len(head) < _HEAD_READ_LIMIT:
            chunk = handle.read(16_384)
            if not chunk:
                break
            head += chunk
    return head


@functools.cache  # once per process: a run builds the docs after each of its suites
def _warn_missing_assets(assets_dir: Path, missing: tuple[str, ...]) -> None:
    logger.warning(
        "GX Data Docs keep loading their scripts and stylesheets from public CDNs: the local copies are not "
        "installed (%d missing under %s, e.g. %s). Offline, the pages' tables stay empty. `make install` installs "
        "them with npm (Node.js and npm needed); the next validation points the pages at them.",
        len(missing), assets_dir, missing[0],
    )


@functools.cache
def _warn_unknown_urls(urls: tuple[str, ...]) -> None:
    logger.warning(
        "GX Data Docs load %s from the network, which features/data_docs.py has no local copy of (a newer GX?); "
        "offline those parts of the pages will not load. Add them to CDN_ASSETS and vendor/data-docs/package.json.",
        ", ".join(urls),
    )
