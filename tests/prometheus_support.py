"""The deploy/ files as the tests read them (the Grafana dashboard's queries, the rules' queries), the real
Prometheus server started on a free port with deploy/prometheus's config pointed at test processes, its
HTTP API, and a plot of the dashboard's panels drawn from that API (Grafana is not installed here)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from serving.testing import free_port

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
CONFIG, RULES = PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "flywheel-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "flywheel-dashboard.json"
RATE_INTERVAL = "5m"  # Grafana's $__rate_interval when checking for data: each exchange fits in it
PLOT_RATE_INTERVAL = "1m"  # and when plotting: the shape of a few minutes shows
COMPARISON = re.compile(r" (==|!=|>=|<=|>|<) ")  # a rule's threshold: an operator with a space either side


@dataclass(frozen=True)
class Query:
    where: str  # the panel, annotation or rule it comes from
    expr: str
    legend: str = ""


def dashboard_queries(rate_interval: str = RATE_INTERVAL) -> list[Query]:
    """Every target of every panel, and every annotation query, with Grafana's interval filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [Query(f"panel {panel['title']!r}", target["expr"], target.get("legendFormat", ""))
               for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [Query(f"annotation {a['name']!r}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    return [Query(q.where, q.expr.replace("$__rate_interval", rate_interval), q.legend) for q in queries]


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_queries() -> list[Query]:
    """Each recording rule's expression; each alert's expression with its thresholds as `bool` comparisons,
    which answer 0 or 1 instead of filtering: data means every series the alert needs is there."""
    queries = []
    for rule in rules():
        if "record" in rule:
            queries.append(Query(f"recording rule {rule['record']}", rule["expr"]))
        else:
            queries.append(Query(f"alert {rule['alert']}", COMPARISON.sub(r" \1 bool ", rule["expr"])))
    return queries


def scrape_config(tmp_path: Path, targets: dict[str, int]) -> Path:
    """deploy/prometheus/prometheus.yml with each job's target on this machine's test port, scraping and
    evaluating every second."""
    config = yaml.safe_load(CONFIG.read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    """`prometheus` (Debian's package) on a free port, with its own data folder; stopped on exit."""

    def __init__(self, config: Path, data: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.with_suffix(".log")
        self.argv = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Prometheus":
        with self.log.open("w") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "Prometheus not ready in 60 s"
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(30)

    def api(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]


def finite_values(result: list[dict]) -> list[float]:
    return [v for v in (float(series["value"][1]) for series in result) if math.isfinite(v)]


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or str(labels)


def plot_panels(prometheus: Prometheus, titles: list[str], start: float, end: float, path: Path,
                promotions: list[float]) -> None:
    """The dashboard's panels named `titles`, drawn from Prometheus's range API, promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = dashboard_queries(PLOT_RATE_INTERVAL)
    columns = 3
    rows = -(-len(titles) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    step = max(1.0, (end - start) / 300)
    for ax, title in zip(axes.flat, titles):
        for query in (q for q in queries if q.where == f"panel {title!r}"):
            for series in prometheus.query_range(query.expr, start, end, step):
                times = [(float(t) - start) / 60 for t, _ in series["values"]]
                ax.plot(times, [float(v) for _, v in series["values"]], label=legend(query.legend, series["metric"]))
        for promoted in promotions:
            ax.axvline((promoted - start) / 60, color="#F2495C", linestyle="--", linewidth=1)
        ax.set_title(title.replace("👍", "thumbs-up").replace("👎", "thumbs-down"), fontsize=10)  # no emoji font
        ax.set_xlabel("minutes into the test", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    figure.suptitle("Flywheel dashboard queries from Prometheus (dashed: a promotion)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
