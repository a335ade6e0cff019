#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus alert rules against the metrics the code exports.

    observability_check.py RENDERED.yaml              check, exit 1 on any problem
    observability_check.py --self-test RENDERED.yaml  prove the check refuses broken copies

RENDERED.yaml is `kubectl kustomize k8s/observability`: the dashboard is read from the
ConfigMap in it and the rules from the PrometheusRule, so what is checked is what would be
applied. The metrics are those of `k8s/observability/metrics.json`, the rendering of
`CATALOGUE` in libs/common/src/metrics.rs that a test there keeps equal to the code.

- Every PromQL expression (every panel target, every rule) is tokenized; every metric it names
  must be one of the catalogue's `prometheus_series`; every label in a matcher must be a label
  of that metric (or `job`/`instance`, which the Collector's Prometheus exporter adds, or `le`
  on a `_bucket` series); every label in `by`/`without`/`on`/`ignoring`/`group_left`/
  `group_right` a label of some metric of the expression (or `job`/`instance`/`le`). Matchers
  on labels whose values the code fixes are checked against those values: `rpc_service` and
  `rpc_method` against the services and methods in proto/ (plus health and reflection), the
  service-name labels against the four services, `rpc_grpc_status_code` against 0-16, ticket
  severities and reward states against feedback's migrations (for `=~`, every `|` alternative
  must match some known value); a set of several status codes must be exactly the codes of
  `is_server_fault` in libs/common/src/layers.rs. Grafana's `$__rate_interval`,
  `$__interval` and `$__range` stand for a duration; no other variable may appear in PromQL.
- The dashboard: a `datasource` template variable of type prometheus used by every panel and
  target; rows Shared, Profiles, Segmentation, Loyalty and Feedback; every panel has a unique id,
  a title and a description, and at least one query.
- The PrometheusRule (a CRD, so kubernetes-validate has no schema for it): the fields of
  `monitoring.coreos.com/v1` that matter, strictly (an unknown field fails); every alert has
  `for`, a `severity` label (critical, warning or info), and `summary`, `description` and
  `runbook` annotations; every alert the issue asks for exists (REQUIRED_ALERTS).
- The rendering holds only ConfigMaps (validated by kubernetes-validate) and PrometheusRules
  (validated here); the dashboard ConfigMap carries the `grafana_dashboard: "1"` label the
  Grafana sidecar looks for and stays small enough for a client-side `kubectl apply`.
- README.md names every panel title and every alert (each is described there).

The self-test breaks copies of the rendering (a made-up metric in a panel and in a rule, a
label the metric does not carry in a matcher and in a `by`, a misspelt `rpc_service`, fault
codes other than is_server_fault's, an unknown function, a panel
without a description, an alert without `for` or severity, a required alert removed (the
rewards one, and the one on lag in time), an unknown rule field) and fails unless every copy is refused, one of them through the command line, and
the original is accepted.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
METRICS_JSON = ROOT / "k8s/observability/metrics.json"
PROTO = ROOT / "proto"
README = ROOT / "README.md"

# Labels the Collector's Prometheus exporter puts on every series: `job` from
# service.namespace/service.name, `instance` from service.instance.id.
EXPORTER_LABELS = {"job", "instance"}

# Each thing an issue asks an alert for (22: the dashboard and alerts; 20: lag in time, the
# age of the oldest unapplied event), and the alerts that answer it.
REQUIRED_ALERTS = {
    "error ratio": ["CustopsRpcErrorRatioHigh"],
    "p99 latency": ["CustopsRpcLatencyHigh"],
    "pool exhaustion": ["CustopsDbPoolSaturated", "CustopsDbPoolTimeouts"],
    "feed lag": ["CustopsFeedLagHigh", "CustopsFeedConsumerStalled", "CustopsFeedLagAgeHigh"],
    "outbox backlog": ["CustopsOutboxBacklog"],
    "rewards stuck": ["CustopsSurveyRewardsStuck"],
    "SLA breaches": ["CustopsTicketsSlaBreached"],
}
REQUIRED_ROWS = ["Shared", "Profiles", "Segmentation", "Loyalty", "Feedback"]
SEVERITIES = {"critical", "warning", "info"}
# kubectl's client-side apply stores the object in an annotation limited to 256 KiB.
MAX_DASHBOARD_BYTES = 200_000

# ---------------------------------------------------------------------------------------------
# PromQL

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
# PromQL functions (label_replace and label_join are left out on purpose: they create labels
# this check could not follow).
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
    "histogram_stddev", "histogram_stdvar", "histogram_sum", "hour", "idelta", "increase",
    "irate", "ln", "log10", "log2", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector",
    "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
    "last_over_time", "present_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
GRAFANA_DURATIONS = {"$__rate_interval", "$__interval", "$__range"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)
_RANGE = re.compile(r"\[\s*(?:\d+(?:ms|[smhdwy]))+\s*(?::\s*(?:(?:\d+(?:ms|[smhdwy]))+)?\s*)?\]")


class PromQLError(ValueError):
    pass


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value)


@dataclass
class Query:
    selectors: list[Selector]
    grouping_labels: list[str]


def tokenize(expr: str) -> list[tuple[str, str]]:
    for var in GRAFANA_DURATIONS:
        expr = expr.replace(var, "5m")
    if "$" in expr:
        raise PromQLError(f"a template variable other than {sorted(GRAFANA_DURATIONS)}: "
                          f"{expr[expr.index('$'):][:30]!r}")
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "range" and not _RANGE.fullmatch(m.group()):
            raise PromQLError(f"not a range or subquery: {m.group()}")
        tokens.append((kind, m.group()))
    return tokens


def _unquote(s: str) -> str:
    """A PromQL string's value: raw between backticks, else Go-style escapes (as Python's)."""
    if s.startswith("`"):
        return s[1:-1]
    return ast.literal_eval(s)


def parse(expr: str) -> Query:
    """The metric selectors and grouping labels of a PromQL expression. Not a full parser: it
    knows what is a function, an aggregation, a keyword, a label list or a matcher, and takes
    every other identifier for a metric name, so an unknown function fails as an unknown
    metric rather than passing."""
    tokens = tokenize(expr)
    selectors: list[Selector] = []
    grouping: list[str] = []
    depth = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident":
            low = text.lower()
            if low in GROUPING:
                if nxt[1] != "(":
                    if low in ("group_left", "group_right"):
                        i += 1
                        continue
                    raise PromQLError(f"`{text}` without a label list")
                j = i + 2
                while j < len(tokens) and tokens[j][1] != ")":
                    k, t = tokens[j]
                    if k == "ident":
                        grouping.append(t)
                    elif t != ",":
                        raise PromQLError(f"unexpected {t!r} in `{text} (...)`")
                    j += 1
                if j == len(tokens):
                    raise PromQLError(f"`{text} (` not closed")
                i = j + 1
                continue
            if low in KEYWORDS:
                i += 1
                continue
            if text in AGGREGATIONS and nxt[0] == "ident" and nxt[1].lower() in ("by", "without"):
                i += 1  # `sum by (...) (...)`: the label list is read next
                continue
            if nxt[1] == "(":
                if text in AGGREGATIONS or text in FUNCTIONS:
                    i += 1
                    continue
                raise PromQLError(f"unknown function {text}()")
            sel = Selector(text)
            selectors.append(sel)
            i += 1
            if nxt[1] == "{":
                i = _matchers(tokens, i + 1, sel)
            continue
        if text == "{":
            raise PromQLError("a selector without a metric name (write the name before `{`)")
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth < 0:
                raise PromQLError("unbalanced `)`")
        i += 1
    if depth:
        raise PromQLError("unbalanced `(`")
    return Query(selectors, grouping)


def _matchers(tokens, i: int, sel: Selector) -> int:
    """Reads `label op "value", ...}` from tokens[i]; returns the index after `}`."""
    while i < len(tokens) and tokens[i][1] != "}":
        if tokens[i][1] == ",":
            i += 1
            continue
        try:
            (lk, label), (_, op), (vk, value) = tokens[i : i + 3]
        except ValueError:
            raise PromQLError(f"{sel.metric}{{ not closed") from None
        if lk != "ident" or op not in ("=", "!=", "=~", "!~") or vk != "string":
            raise PromQLError(f"bad label matcher in {sel.metric}{{...}}: {label} {op} {value}")
        sel.matchers.append((label, op, _unquote(value)))
        i += 3
    if i == len(tokens):
        raise PromQLError(f"{sel.metric}{{ not closed")
    return i + 1


# ---------------------------------------------------------------------------------------------
# What the code says


@dataclass(frozen=True)
class Catalogue:
    series: dict[str, set[str]]  # Prometheus series -> its labels
    known_values: dict[str, set[str]]  # label -> every value the code can give it
    fault_codes: set[str]  # the gRPC codes is_server_fault counts as the server's fault


GRPC_CODES = ["Ok", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
              "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
              "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
              "Unauthenticated"]


def read_fault_codes() -> set[str]:
    """The codes of `fn is_server_fault` in libs/common/src/layers.rs, as numbers."""
    rust = (ROOT / "libs/common/src/layers.rs").read_text(encoding="utf-8")
    m = re.search(r"fn\s+is_server_fault\s*\([^)]*\)\s*->\s*bool\s*\{(.*?)\n\}", rust, re.S)
    names = re.findall(r"Code::(\w+)", m[1]) if m else []
    if not names or any(n not in GRPC_CODES for n in names):
        raise ValueError(f"layers.rs: cannot read is_server_fault (found {names})")
    return {str(GRPC_CODES.index(n)) for n in names}


def read_catalogue() -> Catalogue:
    data = json.loads(METRICS_JSON.read_text(encoding="utf-8"))
    series: dict[str, set[str]] = {}
    for m in data["metrics"]:
        for s in m["prometheus_series"]:
            series[s] = set(m["prometheus_labels"])
    if not series:
        raise ValueError(f"{METRICS_JSON.relative_to(ROOT)} declares no metric")
    services, methods, svc_names = set(), set(), set()
    for proto in sorted(PROTO.rglob("*.proto")):
        text = proto.read_text(encoding="utf-8")
        pkg = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        for name in re.findall(r"^service\s+(\w+)\s*\{", text, re.M):
            services.add(f"{pkg[1]}.{name}")
        methods.update(re.findall(r"^\s*rpc\s+(\w+)\s*\(", text, re.M))
        if pkg and pkg[1].startswith("custops.") and not pkg[1].startswith("custops.common."):
            svc_names.add(pkg[1].split(".")[1])
    if len(svc_names) != 4 or not methods:
        raise ValueError(f"proto/ read as services {sorted(svc_names)}: the parser is off")
    # Served by every binary beside its own service (tonic-health, tonic-reflection).
    services |= {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                 "grpc.reflection.v1alpha.ServerReflection"}
    methods |= {"Check", "Watch", "ServerReflectionInfo"}
    names = svc_names
    # Values feedback's samplers take from its tables, as the migrations constrain them.
    sql = "\n".join(p.read_text(encoding="utf-8")
                    for p in sorted((ROOT / "services/feedback/migrations").glob("*.sql")))
    def check_values(column: str) -> set[str]:
        found = re.findall(rf"{column}\s+text[^\n]*CHECK \({column} IN \(([^)]*)\)\)", sql)
        if not found:
            raise ValueError(f"feedback migrations: no CHECK on {column}: the parser is off")
        return set(re.findall(r"'([^']*)'", found[-1]))
    return Catalogue(series, fault_codes=read_fault_codes(), known_values={
        "custops_ticket_severity": check_values("severity"),
        "custops_reward_state": check_values("reward_status"),
        "rpc_service": services,
        "rpc_method": methods,
        "rpc_system": {"grpc"},
        "rpc_grpc_status_code": {str(c) for c in range(17)},
        "custops_service": names,
        "db_client_connection_pool_name": names,
        "messaging_destination_name": names,
        "messaging_consumer_group_name": names,
        "job": {f"custops-{n}" for n in names} | {"custops"},
    })


# ---------------------------------------------------------------------------------------------
# The checks


class Checker:
    def __init__(self, cat: Catalogue):
        self.cat = cat
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # -- PromQL ------------------------------------------------------------------------------

    def check_expr(self, where: str, expr) -> None:
        if not isinstance(expr, str) or not expr.strip():
            self.error(where, "no PromQL expression")
            return
        try:
            q = parse(expr)
        except PromQLError as e:
            self.error(where, f"cannot read the PromQL: {e}")
            return
        if not q.selectors:
            self.error(where, "the expression names no metric")
        labels_here = set(EXPORTER_LABELS)
        for sel in q.selectors:
            labels = self.cat.series.get(sel.metric)
            if labels is None:
                hint = self._closest(sel.metric)
                self.error(where, f"metric {sel.metric} is not exported by the code (not in "
                                  f"{METRICS_JSON.relative_to(ROOT)}){hint}")
                continue
            allowed = labels | EXPORTER_LABELS | ({"le"} if sel.metric.endswith("_bucket") else set())
            labels_here |= allowed
            for label, op, value in sel.matchers:
                if label not in allowed:
                    self.error(where, f"label {label} is not a label of {sel.metric} "
                                      f"(it has {', '.join(sorted(allowed))})")
                    continue
                self.check_value(where, sel.metric, label, op, value)
        for label in q.grouping_labels:
            if label not in labels_here:
                self.error(where, f"label {label} in by/on/ignoring is not a label of any metric "
                                  f"of the expression ({', '.join(s.metric for s in q.selectors)})")

    def check_value(self, where, metric, label, op, value) -> None:
        if label == "rpc_grpc_status_code" and op == "=~":
            codes = set(_alternatives(value))
            if len(codes) > 1 and codes != self.cat.fault_codes:
                self.error(where, f"status codes {value!r} are not the server-fault codes of "
                                  f"is_server_fault in libs/common/src/layers.rs "
                                  f"({'|'.join(sorted(self.cat.fault_codes, key=int))})")
        known = self.cat.known_values.get(label)
        if known is None:
            return
        if op in ("=", "!="):
            if value not in known:
                self.error(where, f"{metric}{{{label}=\"{value}\"}}: the code never gives "
                                  f"{label} that value")
            return
        for alt in _alternatives(value):
            try:
                pattern = re.compile(alt)
            except re.error as e:
                self.error(where, f"{metric}{{{label}=~...}}: bad regex {alt!r}: {e}")
                continue
            if not any(pattern.fullmatch(v) for v in known):
                self.error(where, f"{metric}{{{label}=~\"{value}\"}}: alternative {alt!r} "
                                  f"matches no value the code gives {label}")

    def _closest(self, name: str) -> str:
        import difflib

        close = difflib.get_close_matches(name, self.cat.series, n=1)
        return f"; did you mean {close[0]}?" if close else ""

    # -- dashboard ---------------------------------------------------------------------------

    def check_dashboard(self, where: str, dash: dict) -> list[str]:
        """Checks the dashboard; returns its panel titles."""
        variables = (dash.get("templating") or {}).get("list") or []
        if not any(v.get("name") == "datasource" and v.get("type") == "datasource"
                   and v.get("query") == "prometheus" for v in variables):
            self.error(where, "no `datasource` template variable of type datasource/prometheus")
        if not dash.get("uid") or not dash.get("title"):
            self.error(where, "the dashboard needs a uid and a title")
        rows, titles, ids, in_row = [], [], set(), set()
        for panel, row in _panels(dash.get("panels") or []):
            if panel.get("type") == "row":
                rows.append(panel.get("title"))
                continue
            title = panel.get("title") or ""
            pw = f"{where}: panel {title or panel.get('id')!r} (row {row!r})"
            titles.append(title)
            if (row, title) in in_row:
                self.error(pw, "another panel of the row has that title (README describes each by title)")
            in_row.add((row, title))
            if not title.strip():
                self.error(pw, "has no title")
            if not (panel.get("description") or "").strip():
                self.error(pw, "has no description")
            if panel.get("id") in ids:
                self.error(pw, f"id {panel.get('id')} is used twice")
            ids.add(panel.get("id"))
            if not panel.get("gridPos"):
                self.error(pw, "has no gridPos")
            if _uid(panel.get("datasource")) != "${datasource}":
                self.error(pw, "must use the ${datasource} variable as its datasource")
            targets = panel.get("targets") or []
            if not targets:
                self.error(pw, "has no query")
            for n, t in enumerate(targets):
                tw = f"{pw} query {t.get('refId', n)}"
                if _uid(t.get("datasource", panel.get("datasource"))) != "${datasource}":
                    self.error(tw, "must use the ${datasource} variable as its datasource")
                self.check_expr(tw, t.get("expr"))
        for r in REQUIRED_ROWS:
            if r not in rows:
                self.error(where, f"no row titled {r!r} (rows: {rows})")
        return sorted(set(titles))

    # -- rules -------------------------------------------------------------------------------

    def check_rule_object(self, where: str, obj: dict) -> list[str]:
        """Checks a PrometheusRule strictly; returns its alert names."""
        _strict(self, where, obj, {"apiVersion", "kind", "metadata", "spec"})
        if obj.get("apiVersion") != "monitoring.coreos.com/v1":
            self.error(where, f"apiVersion must be monitoring.coreos.com/v1, not {obj.get('apiVersion')}")
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            self.error(where, "metadata.name is missing")
        for key in ("labels", "annotations"):
            if not _str_map(meta.get(key, {})):
                self.error(where, f"metadata.{key} must map strings to strings")
        spec = obj.get("spec") or {}
        _strict(self, where + " spec", spec, {"groups"})
        groups = spec.get("groups")
        if not isinstance(groups, list) or not groups:
            self.error(where, "spec.groups must be a non-empty list")
            return []
        alerts, group_names = [], set()
        for g in groups:
            gw = f"{where} group {g.get('name')!r}"
            _strict(self, gw, g, {"name", "interval", "rules", "partial_response_strategy",
                                  "limit", "query_offset", "labels"})
            if not g.get("name") or g.get("name") in group_names:
                self.error(gw, "every group needs a name of its own")
            group_names.add(g.get("name"))
            if "interval" in g and not _is_duration(g["interval"]):
                self.error(gw, f"interval {g['interval']!r} is not a duration")
            for r in g.get("rules") or []:
                name = r.get("alert") or r.get("record")
                rw = f"{gw} rule {name!r}"
                _strict(self, rw, r, {"alert", "record", "expr", "for", "keep_firing_for",
                                      "labels", "annotations"})
                if bool(r.get("alert")) == bool(r.get("record")):
                    self.error(rw, "a rule is either `alert` or `record`")
                self.check_expr(rw, r.get("expr"))
                for key in ("labels", "annotations"):
                    if not _str_map(r.get(key, {})):
                        self.error(rw, f"{key} must map strings to strings")
                if not r.get("alert"):
                    continue
                alerts.append(r["alert"])
                if not _is_duration(r.get("for")):
                    self.error(rw, "has no `for` duration (an alert should hold before it fires)")
                sev = (r.get("labels") or {}).get("severity")
                if sev not in SEVERITIES:
                    self.error(rw, f"severity label {sev!r} is not one of {sorted(SEVERITIES)}")
                ann = r.get("annotations") or {}
                for key in ("summary", "description", "runbook"):
                    if not str(ann.get(key, "")).strip():
                        self.error(rw, f"has no {key} annotation")
        return alerts


def _strict(checker: Checker, where: str, obj, allowed: set[str]) -> None:
    if not isinstance(obj, dict):
        checker.error(where, "must be a mapping")
        return
    for key in obj:
        if key not in allowed:
            checker.error(where, f"unknown field {key!r} (the CRD knows {sorted(allowed)})")


def _str_map(m) -> bool:
    return isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())


def _is_duration(d) -> bool:
    return isinstance(d, str) and re.fullmatch(r"(?:\d+(?:ms|[smhdwy]))+", d) is not None


def _uid(ds) -> str | None:
    return ds.get("uid") if isinstance(ds, dict) else ds


def _panels(panels, row=None):
    """(panel, row title) in order, rows included; a collapsed row holds its panels."""
    for p in panels:
        if p.get("type") == "row":
            yield p, p.get("title")
            row = p.get("title")
            yield from _panels(p.get("panels") or [], row)
        else:
            yield p, row


def _alternatives(regex: str) -> list[str]:
    """The top-level `|` alternatives of a regex."""
    out, depth, cur, i = [], 0, "", 0
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            cur += regex[i : i + 2]
            i += 2
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "|" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return out


def check(cat: Catalogue, docs: list[dict], readme: str) -> list[str]:
    c = Checker(cat)
    dashboards, alerts, titles = 0, [], []
    for obj in docs:
        kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
        where = f"{kind}/{name}"
        if kind == "ConfigMap":
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if labels.get("grafana_dashboard") != "1":
                c.error(where, 'lacks the label grafana_dashboard: "1" the Grafana sidecar loads')
            for key, text in (obj.get("data") or {}).items():
                if not key.endswith(".json"):
                    c.error(where, f"data key {key} is not a dashboard (.json)")
                    continue
                dashboards += 1
                if len(text.encode()) > MAX_DASHBOARD_BYTES:
                    c.error(where, f"{key} is {len(text.encode())} bytes; over "
                                   f"{MAX_DASHBOARD_BYTES} `kubectl apply` cannot store it")
                try:
                    dash = json.loads(text)
                except ValueError as e:
                    c.error(where, f"{key} is not JSON: {e}")
                    continue
                titles += c.check_dashboard(f"{where} {key}", dash)
        elif kind == "PrometheusRule":
            alerts += c.check_rule_object(where, obj)
        else:
            c.error(where, "only ConfigMaps and PrometheusRules belong in k8s/observability")
    if dashboards == 0:
        c.error("rendering", "no dashboard ConfigMap")
    for item, names in REQUIRED_ALERTS.items():
        for name in names:
            if name not in alerts:
                c.error("rules", f"alert {name} ({item}) is missing")
    if len(alerts) != len(set(alerts)):
        c.error("rules", f"alert names used twice: {sorted({a for a in alerts if alerts.count(a) > 1})}")
    for name in alerts:
        if name not in readme:
            c.error("README.md", f"does not describe alert {name}")
    for title in titles:
        if title and title not in readme:
            c.error("README.md", f"does not describe panel {title!r}")
    return list(dict.fromkeys(c.errors))


# ---------------------------------------------------------------------------------------------
# Self-test


def _dash(docs) -> tuple[dict, str, dict]:
    cm = next(d for d in docs if d.get("kind") == "ConfigMap")
    key = next(iter(cm["data"]))
    return cm, key, json.loads(cm["data"][key])


def _edit_dash(edit):
    def mutate(docs):
        cm, key, dash = _dash(docs)
        edit(dash)
        cm["data"][key] = json.dumps(dash)
    return mutate


def _first_panel(dash, pred=lambda p: True):
    return next(p for p, _ in _panels(dash["panels"]) if p.get("type") != "row" and pred(p))


def _rules(docs):
    return [r for d in docs if d.get("kind") == "PrometheusRule"
            for g in d["spec"]["groups"] for r in g["rules"]]


def _alert(docs, name):
    return next(r for r in _rules(docs) if r.get("alert") == name)


def _made_up_metric_in_panel(dash):
    t = _first_panel(dash)["targets"][0]
    t["expr"] = "sum(rate(custops_made_up_requests_total[$__rate_interval]))"


def _bad_label_in_panel(dash):
    p = _first_panel(dash, lambda p: "rpc_server_duration_milliseconds_count" in p["targets"][0]["expr"])
    p["targets"][0]["expr"] = ('sum by (rpc_service) (rate(rpc_server_duration_milliseconds_count'
                               '{db_client_connection_pool_name="loyalty"}[$__rate_interval]))')


def _bad_by_label_in_rule(docs):
    r = _alert(docs, "CustopsFeedLagHigh")
    r["expr"] = "max by (custops_ledger_kind) (custops_feed_consumer_lag) > 10000"


BREAKAGES = [
    ("a made-up metric in a panel", _edit_dash(_made_up_metric_in_panel),
     r"panel .*: metric custops_made_up_requests_total is not exported by the code"),
    ("a made-up metric in a rule",
     lambda docs: _alert(docs, "CustopsOutboxBacklog").update(
         expr="max by (custops_service) (custops_outbox_oldest_age_seconds) > 30"),
     r"rule 'CustopsOutboxBacklog': metric custops_outbox_oldest_age_seconds is not exported"),
    ("a label the metric lacks, in a panel's matcher", _edit_dash(_bad_label_in_panel),
     r"label db_client_connection_pool_name is not a label of rpc_server_duration_milliseconds_count"),
    ("a label no metric has, in a rule's by()", _bad_by_label_in_rule,
     r"rule 'CustopsFeedLagHigh': label custops_ledger_kind in by/on/ignoring"),
    ("a misspelt rpc_service value",
     _edit_dash(lambda dash: _first_panel(dash, lambda p: "LoyaltyService" in p["targets"][0]["expr"])
                ["targets"][0].update(expr='sum(rate(rpc_server_duration_milliseconds_count'
                                           '{rpc_service="custops.loyalty.v1.LoyaltySvc"}[5m]))')),
     r'rpc_service="custops.loyalty.v1.LoyaltySvc"\}: the code never gives'),
    ("a fault-code set other than is_server_fault's",
     lambda docs: _alert(docs, "CustopsRpcErrorRatioHigh").update(
         expr=_alert(docs, "CustopsRpcErrorRatioHigh")["expr"].replace('"2|4|12|13|14|15"', '"2|13|14"')),
     r"status codes '2\|13\|14' are not the server-fault codes"),
    ("an unknown function", _edit_dash(lambda dash: _first_panel(dash)["targets"][0].update(
        expr="rated(rpc_server_duration_milliseconds_count[5m])")),
     r"unknown function rated\(\)"),
    ("a panel without a description",
     _edit_dash(lambda dash: _first_panel(dash).pop("description")), r"has no description"),
    ("an alert without `for`", lambda docs: _alert(docs, "CustopsRpcErrorRatioHigh").pop("for"),
     r"'CustopsRpcErrorRatioHigh': has no `for`"),
    ("an alert without severity",
     lambda docs: _alert(docs, "CustopsTicketsSlaBreached")["labels"].pop("severity"),
     r"'CustopsTicketsSlaBreached': severity label None"),
    ("an alert without a summary",
     lambda docs: _alert(docs, "CustopsDbPoolTimeouts")["annotations"].pop("summary"),
     r"'CustopsDbPoolTimeouts': has no summary annotation"),
    ("a required alert removed",
     lambda docs: [g["rules"].remove(_alert(docs, "CustopsSurveyRewardsStuck"))
                   for d in docs if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]
                   if _alert(docs, "CustopsSurveyRewardsStuck") in g["rules"]],
     r"alert CustopsSurveyRewardsStuck \(rewards stuck\) is missing"),
    ("the alert on lag in time removed",
     lambda docs: [g.update(rules=[r for r in g["rules"]
                                   if r.get("alert") != "CustopsFeedLagAgeHigh"])
                   for d in docs if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]],
     r"alert CustopsFeedLagAgeHigh \(feed lag\) is missing"),
    ("an unknown rule field",
     lambda docs: _alert(docs, "CustopsFeedLagHigh").update(duration="10m"),
     r"unknown field 'duration'"),
    ("no dashboard label",
     lambda docs: _dash(docs)[0]["metadata"]["labels"].pop("grafana_dashboard"),
     r"lacks the label grafana_dashboard"),
    ("no Shared row", _edit_dash(lambda dash: [p.update(title="Common") for p, _ in _panels(dash["panels"])
                                               if p.get("type") == "row" and p["title"] == "Shared"]),
     r"no row titled 'Shared'"),
]

# (expression, metrics, grouping labels) the tokenizer must read so.
_SAMPLES = [
    ('histogram_quantile(0.99, sum by (rpc_service, le) (rate(rpc_server_duration_milliseconds_bucket'
     '{rpc_service=~"a|b", rpc_method!~"X"}[$__rate_interval])))',
     ["rpc_server_duration_milliseconds_bucket"], ["rpc_service", "le"]),
    ('sum(rate(a_total{x="1,2}"}[5m] offset 1h)) by (x) / ignoring(y) group_left b > bool 0.5',
     ["a_total", "b"], ["x", "y"]),
    ("max_over_time(m[30m:1m]) and on (z) changes(p[15m]) == 0 # a comment (not_a_metric)",
     ["m", "p"], ["z"]),
    ("1e3 * Inf - 0x1F + time()", [], []),
]


def self_test(cat: Catalogue, path: str, docs: list[dict], readme: str) -> int:
    failures = []
    for expr, metrics, grouping in _SAMPLES:
        q = parse(expr)
        got = ([s.metric for s in q.selectors], q.grouping_labels)
        if got != (metrics, grouping):
            failures.append(f"tokenizer misread {expr!r}: {got}")
    for bad in ("sum(rate(x[5m])", "x{a=b}", "{a=\"b\"}", "rate(x[5 m])", "x{a=\"b\""):
        try:
            parse(bad)
            failures.append(f"tokenizer accepted {bad!r}")
        except PromQLError:
            pass
    baseline = check(cat, docs, readme)
    if baseline:
        failures.append("the unbroken rendering fails:\n  " + "\n  ".join(baseline))
    for what, mutate, expected in BREAKAGES:
        broken = copy.deepcopy(docs)
        mutate(broken)
        errors = check(cat, broken, readme)
        if not any(re.search(expected, e) for e in errors):
            failures.append(f"{what}: not refused (wanted an error matching {expected!r}; "
                            f"got {errors or 'none'})")
    # And once through the command line, on a broken copy on disk: the exit status and message.
    broken = copy.deepcopy(docs)
    BREAKAGES[0][1](broken)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(broken, f, sort_keys=False)
    run = subprocess.run([sys.executable, __file__, f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    if run.returncode != 1 or "custops_made_up_requests_total" not in run.stderr:
        failures.append(f"the command line accepted a broken copy on disk (exit {run.returncode}): "
                        f"{run.stderr.strip()}")
    for f in failures:
        print(f"observability-check self-test: FAILED {f}", file=sys.stderr)
    if failures:
        return 1
    print(f"observability-check self-test: all {len(BREAKAGES) + 1} broken copies of {path} refused "
          f"(one through the command line), tokenizer samples read right, original accepted")
    return 0


def main(argv: list[str]) -> int:
    selftest = "--self-test" in argv
    paths = [a for a in argv if a != "--self-test"]
    if len(paths) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        cat = read_catalogue()
    except (OSError, ValueError, KeyError) as e:
        print(f"observability-check: cannot read the catalogue: {e} (create or refresh it with "
              "CUSTOPS_BLESS=1 cargo test -p custops-common --lib metrics)", file=sys.stderr)
        return 1
    with open(paths[0], encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    # Words only: a title wrapped across two lines of README.md still counts.
    readme = " ".join(README.read_text(encoding="utf-8").split())
    if selftest:
        return self_test(cat, paths[0], docs, readme)
    errors = check(cat, docs, readme)
    for e in errors:
        print(f"observability-check: {e}", file=sys.stderr)
    if errors:
        print(f"observability-check: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    exprs = sum(1 for _ in _all_exprs(docs))
    print(f"observability-check: {exprs} PromQL expressions name only metrics and labels the code "
          f"exports ({len(cat.series)} series in metrics.json); dashboard and rules complete")
    return 0


def _all_exprs(docs):
    for d in docs:
        if d.get("kind") == "ConfigMap":
            for text in (d.get("data") or {}).values():
                for p, _ in _panels(json.loads(text).get("panels") or []):
                    for t in p.get("targets") or []:
                        yield t.get("expr")
        elif d.get("kind") == "PrometheusRule":
            for r in _rules([d]):
                yield r.get("expr")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
