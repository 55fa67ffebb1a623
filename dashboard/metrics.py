"""The dashboard's Prometheus metrics: which pages people open and how long they take to render."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PAGE_VIEWS = Counter("flywheel_dashboard_page_views_total", "Dashboard page renders, by page.", ["page"])
PAGE_RENDER_SECONDS = Histogram(
    "flywheel_dashboard_page_render_seconds", "Time to render a dashboard page, by page.", ["page"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


def render(page) -> None:
    """Run a page of `st.navigation`, counted and timed (also when it stops early with st.stop)."""
    PAGE_VIEWS.labels(page.title).inc()
    with PAGE_RENDER_SECONDS.labels(page.title).time():
        page.run()
