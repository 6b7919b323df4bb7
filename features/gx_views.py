"""GX's Data Docs page views, with each Jinja template compiled once per process.

GX renders a Data Docs page through a Jinja view whose environment it makes anew for every site build, so each
checkpoint run parsed and compiled the ~50 templates of a page again. A 200-row validation took 0.77 CPU-s so
against 0.63 with the templates kept (median of 16 pairs, x1.21; 8 pairs on a loaded machine: x1.09;
benchmarks/data_docs_templates.py). A profile of a lifecycle run had put the compilation at 0.8 s of a run's
two validations: the profiler inflates Jinja's pure-Python compiler several-fold. These views are GX's
own (`DefaultJinjaPageView`, `DefaultJinjaIndexPageView`): the same templates, filters and output. Only their
environments share one in-memory bytecode cache, keyed by template name and source checksum as Jinja keys its
caches, so a template is compiled the first time a process renders it and reused after. The site configuration
`features.validate` saves names them (`site_section_builders.*.view`, `site_index_builder.view`).
"""

from __future__ import annotations

import threading
from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

__all__ = ["CompiledOnceIndexPageView", "CompiledOncePageView", "VIEW_CONFIGS", "compiled_templates",
           "forget_compiled_templates", "name_views"]


class _ProcessTemplateCache(BytecodeCache):
    """Jinja's bytecode cache kept in this process's memory: a bucket's compiled code by (key, checksum)."""

    def __init__(self) -> None:
        self._codes: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # a clean on threads may build Data Docs beside another validation

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._codes.get((bucket.key, bucket.checksum))
        if code is not None:
            bucket.code = code

    def dump_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            self._codes[(bucket.key, bucket.checksum)] = bucket.code

    def clear(self) -> None:
        with self._lock:
            self._codes.clear()

    def __len__(self) -> int:
        return len(self._codes)


_TEMPLATES = _ProcessTemplateCache()


def compiled_templates() -> int:
    """How many templates this process holds compiled (for tests and benchmarks)."""
    return len(_TEMPLATES)


def forget_compiled_templates() -> None:
    """Drop this process's compiled templates: the next page renders compile them again."""
    _TEMPLATES.clear()


class _OnProcessCache:
    """Put a GX view's Jinja environment on the process's template cache, after GX's view made it."""

    # The parameters named, not *args: GX passes a view only the settings its __init__ names (the project's
    # custom styles and views folders), so a catch-all signature rendered pages without the project's styles.
    def __init__(self, custom_styles_directory: str | None = None, custom_views_directory: str | None = None) -> None:
        super().__init__(custom_styles_directory=custom_styles_directory,  # type: ignore[call-arg]
                         custom_views_directory=custom_views_directory)
        self.env.bytecode_cache = _TEMPLATES  # type: ignore[attr-defined]


class CompiledOncePageView(_OnProcessCache, DefaultJinjaPageView):
    """GX's page view (expectation suites, validation results) on the process's template cache."""


class CompiledOnceIndexPageView(_OnProcessCache, DefaultJinjaIndexPageView):
    """GX's index page view on the process's template cache."""


# As a Data Docs site's configuration names them: the page view for each section builder, the index view.
VIEW_CONFIGS: dict[str, dict[str, str]] = {
    "page": {"module_name": __name__, "class_name": CompiledOncePageView.__name__},
    "index": {"module_name": __name__, "class_name": CompiledOnceIndexPageView.__name__},
}
SECTIONS = ("expectations", "validations", "profiling")  # GX's section builders of a site


def name_views(site: dict[str, Any]) -> bool:
    """Name these views in a Data Docs site's configuration (in place): the page view in each of GX's section
    builders, the index view in its index builder. True when the configuration changed and must be saved."""
    sections = site.setdefault("site_section_builders", {})
    builders = [(sections.setdefault(name, {}), VIEW_CONFIGS["page"]) for name in SECTIONS]
    builders.append((site.setdefault("site_index_builder", {"class_name": "DefaultSiteIndexBuilder"}),
                     VIEW_CONFIGS["index"]))
    changed = False
    for builder, view in builders:
        if builder.get("view") != view:
            builder["view"] = dict(view)
            changed = True
    return changed
