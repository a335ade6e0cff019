#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests against the code that will run in them.

    k8s_manifest_check.py RENDERED.yaml...              check, exit 1 on any problem
    k8s_manifest_check.py --self-test RENDERED.yaml...  prove the check refuses broken copies

Schema validation (kubernetes-validate) and policy scanning (checkov) know nothing about
custops; this knows what the binaries read and serve, taken from the Rust source every run:

- Environment: every variable set on a custops container (env, env valueFrom, envFrom of a
  ConfigMap in the same rendering) is one the binaries read: an entry of `VARIABLES` in
  libs/common/src/config.rs, `{SVC}` standing for any service's upper-case name. Every
  `required` entry is set; every `required_unless` entry is set unless its condition holds in
  that container (a server only: a migration Job serves nothing, so serving conditions such as
  the token key do not apply to it). A misspelt name fails both ways.
- Ports: the port a server listens on is `CUSTOPS_<SVC>_PORT` as the manifest sets it, else
  `ServiceKind::default_port` in libs/common/src/service.rs. Its container port named `grpc`
  and every Service that selects it must target that port.
- Probes: all three (startup, readiness, liveness) are native gRPC probes (no TCP, HTTP or exec
  probe anywhere) asking for service "", on the port the binary serves health on: the plaintext
  health-only port `CUSTOPS_HEALTH_PORT` when the manifest sets it (a literal number, different
  from the gRPC port, declared as the container port `grpc-health`), else the gRPC port itself.
  Where the server speaks TLS (`CUSTOPS_TLS_CERT_FILE` set) the health port is required: the
  kubelet's gRPC probe connects in plaintext and cannot present a client certificate.
- Shutdown: terminationGracePeriodSeconds exceeds the preStop pause plus the drain period
  (`CUSTOPS_SHUTDOWN_GRACE_SECS`, default read from config.rs).
- Every workload container (custops or not) has CPU and memory requests and limits and a
  hardened securityContext (non-root, read-only root filesystem, no privilege escalation, all
  capabilities dropped, seccomp RuntimeDefault), and no pod mounts a service account token.
- Every custops server has an HPA, a PodDisruptionBudget and a NetworkPolicy admitting its port.
- Scale-in: every server's HPA has `behavior.scaleDown` with a stabilization window of at least
  MIN_SCALE_DOWN_WINDOW_SECS and policies removing one pod per period, the period longer than
  the pod's grace period plus feedback's reward lease (read from jobs/rewards.rs), so a removed
  replica's feed batch and leased rewards are taken over before the next one goes. A PDB's
  minAvailable stays below the HPA's minReplicas (else no node drain could evict a pod).
- The pooler (k8s/components/pgbouncer): where a PgBouncer runs, each server whose
  DATABASE_URL (or CUSTOPS_<SVC>_DATABASE_URL) comes from a Secret or names the pooler also sets
  a direct URL (DATABASE_DIRECT_URL or CUSTOPS_<SVC>_DATABASE_DIRECT_URL) that does not name it,
  and a NetworkPolicy lets the server reach it; no migration Job's URL names it. Every
  pgbouncer.ini (the component's file, and any rendered ConfigMap) has `pool_mode =
  transaction`, ignores `extra_float_digits`, and per service an alias whose connect_query sets
  search_path to the service's schema (`ServiceKind::schema`) and the statement and lock
  timeouts the service would set itself (ConfigMap, else config.rs defaults).

The self-test breaks copies of the rendered manifests in the ways that matter (a misspelt
variable, a removed probe, limit or securityContext, a TCP probe, a probe on the wrong port, a
health port the probes do not follow or equal to the gRPC port, TLS without a health port, a
short grace period, a missing required variable, a server behind the pooler without a direct
URL, a direct or migration URL naming the pooler, no egress to the pooler, an HPA without
scale-down behaviour or scaling in too fast, a PDB at the HPA's floor) and copies of
pgbouncer.ini (session pooling, extra_float_digits not ignored, an alias missing or on the wrong
schema or timeout), and fails unless the check refuses every one of them and accepts the
originals.
"""

from __future__ import annotations

import configparser
import copy
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_RS = ROOT / "libs/common/src/config.rs"
SERVICE_RS = ROOT / "libs/common/src/service.rs"
REWARDS_RS = ROOT / "services/feedback/src/jobs/rewards.rs"
PGBOUNCER_INI = ROOT / "k8s/components/pgbouncer/pgbouncer.ini"

# Scale-in waits at least this long after a peak: a bulk import's feed backlog takes minutes to
# drain and CPU dips between its bursts (k8s/README.md "What each service gets", HPA).
MIN_SCALE_DOWN_WINDOW_SECS = 300
# What a transaction pooler is called when the rendering does not say (a literal URL with no
# pooler Service beside it): PgBouncer's name and its customary port.
POOLER_NAMES = {"pgbouncer"}
POOLER_PORTS = {6432}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


# ---------------------------------------------------------------------------------------------
# What the code says


@dataclass(frozen=True)
class Variable:
    """One entry of `VARIABLES` in config.rs."""

    name: str  # may contain {SVC}
    kind: str  # required | optional | required_unless
    unless: tuple[str, str] | None  # (variable, value) for required_unless

    def names_for(self, services: list[str]) -> list[str]:
        if "{SVC}" not in self.name:
            return [self.name]
        return [self.name.replace("{SVC}", s.upper()) for s in services]


@dataclass(frozen=True)
class Code:
    """Facts read from the Rust source."""

    variables: list[Variable]
    default_ports: dict[str, int]  # service name -> port
    shutdown_grace_default: int
    schemas: dict[str, str]  # service name -> its Postgres schema
    db_timeout_defaults: dict[str, int]  # CUSTOPS_DB_{STATEMENT,LOCK}_TIMEOUT_MS -> default ms
    reward_lease_secs: int  # how long feedback's reward worker leases a reward


_ENTRY = re.compile(
    r"""Variable::(?P<kind>required_unless|required|optional)\(\s*
        "(?P<name>[A-Z0-9_{}]+)"\s*,\s*
        (?:\(\s*"(?P<other>[A-Z0-9_]+)"\s*,\s*"(?P<value>[^"]*)"\s*\)\s*,\s*)?
        "(?:[^"\\]|\\.)*"\s*\)""",
    re.VERBOSE,
)


def parse_variables(rust: str) -> list[Variable]:
    """The entries of `pub const VARIABLES: &[Variable] = &[ ... ];`, one per line."""
    start = re.search(r"pub\s+const\s+VARIABLES\s*:\s*&\[Variable\]\s*=\s*&\[", rust)
    if not start:
        raise ValueError(f"{CONFIG_RS.relative_to(ROOT)}: `pub const VARIABLES` not found")
    end = rust.find("];", start.end())
    block = rust[start.end() : end]
    variables = []
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        m = _ENTRY.search(line)
        if not m:
            # A format this parser does not know must fail loudly, not shrink the list.
            raise ValueError(f"cannot parse VARIABLES entry: {line}")
        unless = (m["other"], m["value"]) if m["kind"] == "required_unless" else None
        if m["kind"] == "required_unless" and not m["other"]:
            raise ValueError(f"required_unless without its condition: {line}")
        variables.append(Variable(m["name"], m["kind"], unless))
    if not variables:
        raise ValueError("VARIABLES is empty")
    return variables


def parse_default_ports(rust: str) -> dict[str, int]:
    """`ServiceKind::X => port` arms of `fn default_port`."""
    m = re.search(r"fn\s+default_port\s*\([^)]*\)\s*->\s*u16\s*\{(.*?)\n    \}", rust, re.S)
    if not m:
        raise ValueError(f"{SERVICE_RS.relative_to(ROOT)}: `fn default_port` not found")
    ports = {k.lower(): int(p) for k, p in re.findall(r"ServiceKind::(\w+)\s*=>\s*(\d+)", m[1])}
    if not ports:
        raise ValueError("no `ServiceKind::X => port` arm in default_port")
    return ports


def parse_shutdown_grace_default(rust: str) -> int:
    m = re.search(r'"CUSTOPS_SHUTDOWN_GRACE_SECS"\s*,\s*(\d+)\s*\)', rust)
    if not m:
        raise ValueError("default of CUSTOPS_SHUTDOWN_GRACE_SECS not found in config.rs")
    return int(m[1])


# The timeouts a binary sets on its own connections (startup `options`), which behind a
# transaction pooler must come from the pooler's connect_query instead.
DB_TIMEOUTS = {"CUSTOPS_DB_STATEMENT_TIMEOUT_MS": "statement_timeout",
               "CUSTOPS_DB_LOCK_TIMEOUT_MS": "lock_timeout"}


def parse_db_timeout_defaults(rust: str) -> dict[str, int]:
    """`env.parse_or("CUSTOPS_DB_..._TIMEOUT_MS", N)` in config.rs, for each of DB_TIMEOUTS."""
    out = {}
    for var in DB_TIMEOUTS:
        m = re.search(r'parse_or\(\s*"' + var + r'"\s*,\s*(\d+)\s*\)', rust)
        if not m:
            raise ValueError(f"default of {var} not found in config.rs")
        out[var] = int(m[1])
    return out


def parse_schemas(rust: str) -> dict[str, str]:
    """`ServiceKind::X => "schema"` arms of `fn schema`."""
    m = re.search(r"fn\s+schema\s*\([^)]*\)\s*->\s*&'static\s+str\s*\{(.*?)\n    \}", rust, re.S)
    if not m:
        raise ValueError(f"{SERVICE_RS.relative_to(ROOT)}: `fn schema` not found")
    schemas = {k.lower(): v for k, v in re.findall(r'ServiceKind::(\w+)\s*=>\s*"(\w+)"', m[1])}
    if not schemas:
        raise ValueError("no `ServiceKind::X => \"schema\"` arm in fn schema")
    return schemas


def parse_reward_lease(rust: str) -> int:
    m = re.search(r"lease:\s*Duration::from_secs\((\d+)\)", rust)
    if not m:
        raise ValueError(f"{REWARDS_RS.relative_to(ROOT)}: the default reward lease "
                         "(`lease: Duration::from_secs(N)`) not found")
    return int(m[1])


def read_code() -> Code:
    config = CONFIG_RS.read_text(encoding="utf-8")
    service = SERVICE_RS.read_text(encoding="utf-8")
    return Code(
        parse_variables(config),
        parse_default_ports(service),
        parse_shutdown_grace_default(config),
        parse_schemas(service),
        parse_db_timeout_defaults(config),
        parse_reward_lease(REWARDS_RS.read_text(encoding="utf-8")),
    )


# ---------------------------------------------------------------------------------------------
# PgBouncer's configuration


def _connstring(value: str) -> dict[str, str]:
    """A [databases] entry, `key=value key='quoted value' ...`, as a dict."""
    out = {}
    for m in re.finditer(r"(\w+)\s*=\s*('(?:[^']|'')*'|\S+)", value):
        v = m[2]
        out[m[1]] = v[1:-1].replace("''", "'") if v.startswith("'") else v
    return out


def _settings(query: str) -> dict[str, str]:
    """`SET name TO value; SET name = value` statements of a connect_query."""
    out = {}
    for stmt in filter(None, (q.strip() for q in query.split(";"))):
        m = re.fullmatch(r"(?i)SET\s+(?:SESSION\s+)?(\w+)\s*(?:TO|=)\s*(.+)", stmt)
        if m:
            out[m[1].lower()] = m[2].strip().strip("'\"")
    return out


def _millis(value: str) -> int | None:
    m = re.fullmatch(r"(\d+)\s*(ms|s|min)?", value.strip())
    if not m:
        return None
    return int(m[1]) * {None: 1, "ms": 1, "s": 1000, "min": 60_000}[m[2]]


def check_pgbouncer_ini(where: str, text: str, code: Code,
                        timeouts: dict[str, int]) -> list[str]:
    """What the services need of the pooler's pgbouncer.ini (k8s/README.md "PgBouncer"):
    transaction pooling (per database too), DEALLOCATE ALL after every transaction, extra_float_digits
    ignored (sqlx sends it), and per
    service an alias whose connect_query sets search_path to exactly its schema and the
    timeouts the service would have set itself (`timeouts`: variable -> ms)."""
    ini = configparser.ConfigParser(interpolation=None, delimiters=("=",),
                                    comment_prefixes=(";", "#"), strict=True)
    try:
        ini.read_string(text)
    except configparser.Error as e:
        return [f"{where}: cannot read pgbouncer.ini: {e}"]
    errors = []
    main = ini["pgbouncer"] if ini.has_section("pgbouncer") else {}
    if main.get("pool_mode", "session").strip() != "transaction":
        errors.append(f"{where}: pool_mode is {main.get('pool_mode', 'session (the default)')!r}; "
                      "the services expect a transaction pooler (pool_mode = transaction)")
    if main.get("server_reset_query", "").strip().upper() != "DEALLOCATE ALL" \
            or main.get("server_reset_query_always", "0").strip() != "1":
        errors.append(f"{where}: server_reset_query must be DEALLOCATE ALL with "
                      "server_reset_query_always = 1 (sqlx never closes the statements it names "
                      "when its cache is off; another client would find them taken)")
    ignored = {p.strip() for p in main.get("ignore_startup_parameters", "").split(",")}
    if "extra_float_digits" not in ignored:
        errors.append(f"{where}: ignore_startup_parameters must include extra_float_digits "
                      "(sqlx sends it at start-up and PgBouncer refuses any parameter it does "
                      "not know)")
    databases = ini["databases"] if ini.has_section("databases") else {}
    aliases = {name: _connstring(value) for name, value in databases.items()}
    for name, conn in aliases.items():
        if conn.get("pool_mode", "transaction") != "transaction":
            errors.append(f"{where}: database {name} overrides pool_mode with "
                          f"{conn['pool_mode']!r}")
    for svc, schema in sorted(code.schemas.items()):
        conn = aliases.get(svc)
        if conn is None:
            errors.append(f"{where}: no [databases] alias {svc} for custops-{svc}")
            continue
        settings = _settings(conn.get("connect_query", ""))
        if settings.get("search_path") != schema:
            errors.append(f"{where}: database {svc}: connect_query must set search_path to "
                          f"{schema} (it sets {settings.get('search_path', 'nothing')!r}); "
                          f"behind the pooler custops-{svc} cannot set it itself")
        for var, setting in DB_TIMEOUTS.items():
            got = _millis(settings.get(setting, ""))
            if got != timeouts[var]:
                errors.append(f"{where}: database {svc}: connect_query must set {setting} to "
                              f"{timeouts[var]} ms ({var}), not {settings.get(setting, 'nothing')!r}")
    return errors


# ---------------------------------------------------------------------------------------------
# What the manifests say


def load(paths: list[str]) -> list[tuple[str, list[dict]]]:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            out.append((p, [d for d in yaml.safe_load_all(f) if d]))
    return out


def ref(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_template(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    spec = obj.get("spec", {})
    if kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template")


def image_name(image: str) -> str:
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def is_custops_image(image: str) -> bool:
    return image_name(image) == "custops"


@dataclass
class Pooler:
    """The transaction poolers of one rendering: the names and ports their Services answer on,
    and the pod labels of each pooler workload (for the servers' egress)."""

    hosts: set[str]
    ports: set[int]
    pod_labels: list[dict]

    def present(self) -> bool:
        return bool(self.pod_labels)

    def named_by(self, url: str | None) -> bool:
        """Whether a literal database URL points at a pooler: one of its Services, else
        anything called pgbouncer or on PgBouncer's port."""
        if not url:
            return False
        try:
            parts = urlsplit(url)
            host, port = (parts.hostname or ""), parts.port
        except ValueError:
            return False
        first = host.split(".")[0]
        return (host in self.hosts or first in self.hosts or first in POOLER_NAMES
                or port in self.ports or port in POOLER_PORTS)


def find_pooler(docs: list[dict]) -> Pooler:
    """Workloads running a PgBouncer image, and the Services selecting them."""
    pooler = Pooler(set(), set(), [])
    for obj in docs:
        template = pod_template(obj)
        if template is None or not any(
                image_name(c.get("image", "")) in POOLER_NAMES
                for c in template.get("spec", {}).get("containers", [])):
            continue
        labels = template.get("metadata", {}).get("labels", {})
        pooler.pod_labels.append(labels)
        for d in docs:
            if d.get("kind") == "Service" and selects(d.get("spec", {}).get("selector"), labels):
                name = d["metadata"]["name"]
                ns = d["metadata"].get("namespace")
                pooler.hosts |= {name} | ({f"{name}.{ns}", f"{name}.{ns}.svc",
                                           f"{name}.{ns}.svc.cluster.local"} if ns else set())
                pooler.ports |= {p.get("port") for p in d["spec"].get("ports", [])}
    return pooler


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Service selector (plain map) or a LabelSelector matches `labels`."""
    if selector is None:
        return False
    match_labels = selector.get("matchLabels", None)
    exprs = selector.get("matchExpressions", None)
    if match_labels is None and exprs is None:
        match_labels, exprs = selector, []
    for k, v in (match_labels or {}).items():
        if labels.get(k) != v:
            return False
    for e in exprs or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Checker:
    def __init__(self, code: Code):
        self.code = code
        self.services = sorted(code.default_ports)
        self.errors: list[str] = []
        svc_alt = "|".join(s.upper() for s in self.services)
        self.patterns = [
            (re.compile("^" + re.escape(v.name).replace(r"\{SVC\}", f"(?:{svc_alt})") + "$"), v)
            for v in code.variables
        ]
        self.known_names = sorted(
            {n for v in code.variables for n in v.names_for(self.services)}
        )

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # -- one rendered overlay ----------------------------------------------------------------

    def check_file(self, path: str, docs: list[dict]) -> None:
        configmaps = {
            d["metadata"]["name"]: d.get("data", {}) or {}
            for d in docs
            if d.get("kind") == "ConfigMap"
        }
        self.pooler = find_pooler(docs)
        self.check_pooler_config(path, docs, configmaps)
        servers = []  # (where, pod labels, container, service, port)
        for obj in docs:
            template = pod_template(obj)
            if template is None:
                continue
            where = f"{path}: {ref(obj)}"
            self.check_pod(where, obj, template)
            for c in template.get("spec", {}).get("containers", []):
                if is_custops_image(c.get("image", "")):
                    server = self.check_custops_container(where, obj, template, c, configmaps)
                    if server:
                        servers.append((where, obj, template, c) + server)
        if not servers:
            self.error(path, "no custops server Deployment found")
        for server in servers:
            self.check_server_surroundings(docs, *server)

    # -- the pooler --------------------------------------------------------------------------

    def check_pooler_config(self, path: str, docs: list[dict], configmaps: dict) -> None:
        """Every rendered pgbouncer.ini against what the servers need, with the timeouts the
        rendered custops-config gives them."""
        settings = next((data for name, data in configmaps.items()
                         if name.startswith("custops-config")), {})
        timeouts = {var: int(settings[var]) if str(settings.get(var, "")).isdigit() else default
                    for var, default in self.code.db_timeout_defaults.items()}
        found = False
        for name, data in configmaps.items():
            if "pgbouncer.ini" in data:
                found = True
                self.errors += check_pgbouncer_ini(f"{path}: ConfigMap/{name} pgbouncer.ini",
                                                   data["pgbouncer.ini"], self.code, timeouts)
        if self.pooler.present() and not found:
            self.error(path, "a PgBouncer runs but no ConfigMap holds its pgbouncer.ini")

    # -- every pod ---------------------------------------------------------------------------

    def check_pod(self, where: str, obj: dict, template: dict) -> None:
        spec = template.get("spec", {})
        pod_sc = spec.get("securityContext")
        if not pod_sc:
            self.error(where, "pod securityContext is missing")
            pod_sc = {}
        if spec.get("automountServiceAccountToken") is not False:
            self.error(where, "automountServiceAccountToken must be false")
        if spec.get("serviceAccountName") in (None, "", "default"):
            self.error(where, "runs as the default service account")
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            cw = f"{where} container {c.get('name')}"
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not (res.get(part) or {}).get(r):
                        self.error(cw, f"resources.{part}.{r} is missing")
            sc = c.get("securityContext")
            if not sc:
                self.error(cw, "container securityContext is missing")
                sc = {}
            if sc.get("allowPrivilegeEscalation") is not False:
                self.error(cw, "securityContext.allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                self.error(cw, "securityContext.readOnlyRootFilesystem must be true")
            if sc.get("privileged"):
                self.error(cw, "must not be privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                self.error(cw, "securityContext.capabilities.drop must contain ALL")
            if (sc.get("capabilities") or {}).get("add"):
                self.error(cw, "must not add capabilities")
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                self.error(cw, "runAsNonRoot must be true (pod or container)")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                self.error(cw, "seccompProfile.type must be RuntimeDefault (pod or container)")
            if obj.get("kind") in LONG_RUNNING_KINDS:
                for probe in ("readinessProbe", "livenessProbe"):
                    if not c.get(probe):
                        self.error(cw, f"{probe} is missing")

    # -- custops containers ------------------------------------------------------------------

    def resolve_env(self, where: str, c: dict, configmaps: dict) -> dict[str, str | None]:
        """Name -> value as the container will see it; None for a value from a Secret."""
        env: dict[str, str | None] = {}
        sources: dict[str, str] = {}
        for ef in c.get("envFrom", []) or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                name = ef["configMapRef"]["name"]
                if name not in configmaps:
                    if not ef["configMapRef"].get("optional"):
                        self.error(where, f"envFrom ConfigMap {name} is not in the rendering")
                    continue
                for k, v in configmaps[name].items():
                    env[prefix + k] = str(v)
                    sources[prefix + k] = f"ConfigMap {name}"
            elif "secretRef" in ef:
                self.error(
                    where,
                    "envFrom secretRef hides which variables it sets; name each one in env "
                    "with valueFrom.secretKeyRef",
                )
        for e in c.get("env", []) or []:
            name = e["name"]
            if "value" in e:
                env[name] = str(e["value"])
            elif "configMapKeyRef" in (e.get("valueFrom") or {}):
                r = e["valueFrom"]["configMapKeyRef"]
                env[name] = (configmaps.get(r["name"]) or {}).get(r["key"])
                if env[name] is None and not r.get("optional"):
                    self.error(where, f"{name}: ConfigMap {r['name']} key {r['key']} not found")
            elif e.get("valueFrom"):
                env[name] = None  # a Secret or a field: set, value unknown here
            else:
                env[name] = ""
            sources[name] = "env"
        return env

    def binary(self, where: str, c: dict) -> tuple[str, list[str]] | None:
        """('serve' | 'migrate', services) from the container's command line."""
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        if not argv:
            self.error(where, "custops container must name its binary in command")
            return None
        exe = argv[0].rsplit("/", 1)[-1]
        if exe.startswith("custops-"):
            svc = exe[len("custops-") :]
            if svc not in self.code.default_ports:
                self.error(where, f"unknown binary {exe}")
                return None
            return "serve", [svc]
        if exe == "custops" and len(argv) >= 2 and argv[1] == "migrate":
            # Flags (e.g. --create-roles) are the CLI's business; the rest name services.
            svcs = [a for a in argv[2:] if not a.startswith("-")] or self.services
            unknown = [s for s in svcs if s not in self.code.default_ports]
            if unknown:
                self.error(where, f"custops migrate: unknown service(s) {unknown}")
                return None
            return "migrate", svcs
        self.error(where, f"unexpected custops command line {argv}")
        return None

    def check_custops_container(self, where, obj, template, c, configmaps):
        cw = f"{where} container {c.get('name')}"
        found = self.binary(cw, c)
        if not found:
            return None
        mode, services = found
        env = self.resolve_env(cw, c, configmaps)

        for name in env:
            if not any(p.match(name) for p, _ in self.patterns):
                close = difflib.get_close_matches(name, self.known_names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(
                    cw,
                    f"sets {name}, which no custops binary reads{hint}; the list is VARIABLES "
                    f"in {CONFIG_RS.relative_to(ROOT)}",
                )

        def is_set(name: str) -> bool:
            return name in env and env[name] != ""

        for v in self.code.variables:
            for name in v.names_for(services):
                if v.kind == "required" and not is_set(name):
                    self.error(cw, f"required variable {name} is not set")
                if v.kind == "required_unless" and mode == "serve" and not is_set(name):
                    other, value = v.unless
                    if env.get(other) != value:
                        self.error(
                            cw,
                            f"{name} is not set and is required unless {other}={value} "
                            f"({other} is {env.get(other, 'unset')!r} here)",
                        )

        self.check_database_urls(cw, env, mode, services)
        if mode != "serve":
            return None
        svc = services[0]
        if obj.get("kind") != "Deployment":
            self.error(where, f"custops-{svc} should run as a Deployment")
        port_var = f"CUSTOPS_{svc.upper()}_PORT"
        if port_var in env:
            if env[port_var] is None or not str(env[port_var]).isdigit():
                self.error(cw, f"{port_var} must be a literal port number so probes can match")
                return None
            port = int(env[port_var])
        else:
            port = self.code.default_ports[svc]
        health_port = self.health_port(cw, env, svc, port)
        if health_port is not None:
            self.check_ports_and_probes(cw, c, env, svc, port, health_port)
        self.check_grace(where, template, c, env)
        return svc, port

    def check_database_urls(self, cw, env, mode, services) -> None:
        """A server whose DATABASE_URL names a transaction pooler needs a direct URL too (LISTEN
        and its start-up schema check need a session); a direct URL or a migration's URL must
        not name the pooler. A URL from a Secret is taken to name the pooler when one runs in
        the rendering (what the pgbouncer component is for)."""
        for svc in services:
            pooled_var = next((v for v in (f"CUSTOPS_{svc.upper()}_DATABASE_URL", "DATABASE_URL")
                               if v in env and env[v] != ""), "DATABASE_URL")
            direct_var = next((v for v in (f"CUSTOPS_{svc.upper()}_DATABASE_DIRECT_URL",
                                           "DATABASE_DIRECT_URL")
                               if v in env and env[v] != ""), None)
            pooled = env.get(pooled_var)
            if mode != "serve":
                if self.pooler.named_by(pooled):
                    self.error(cw, f"{pooled_var} names the pooler ({pooled}); migrations take a "
                               "session-level advisory lock, so they need a direct URL")
                continue
            behind = self.pooler.named_by(pooled) or (pooled is None and pooled_var in env
                                                      and self.pooler.present())
            if behind and direct_var is None:
                why = ("names the pooler" if pooled is not None
                       else "comes from a Secret and a pooler runs beside it")
                self.error(cw, f"{pooled_var} {why}, but neither DATABASE_DIRECT_URL nor "
                           f"CUSTOPS_{svc.upper()}_DATABASE_DIRECT_URL is set: behind a "
                           "transaction pooler LISTEN needs a direct connection")
            if direct_var and self.pooler.named_by(env[direct_var]):
                self.error(cw, f"{direct_var} names the pooler ({env[direct_var]}); it must reach "
                           "Postgres directly (LISTEN needs a session)")

    def container_port(self, c: dict, port) -> int | None:
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for p in c.get("ports", []) or []:
            if p.get("name") == port:
                return p.get("containerPort")
        return None

    def health_port(self, cw, env, svc, port) -> int | None:
        """The port the binary serves grpc.health.v1 on: CUSTOPS_HEALTH_PORT, else `port`.

        Like config.rs, an empty (or blank) value counts as unset. None when the value cannot be
        known or could never work (the error is recorded)."""
        raw = env.get("CUSTOPS_HEALTH_PORT")
        if "CUSTOPS_HEALTH_PORT" not in env or (raw is not None and raw.strip() == ""):
            return port
        if raw is None or not raw.strip().isdigit() or not 0 < int(raw) < 65536:
            self.error(cw, "CUSTOPS_HEALTH_PORT must be a literal port number (1-65535) so "
                       f"probes can match; it is {raw!r}")
            return None
        health = int(raw)
        if health == port:
            # The binary refuses to start (config.rs): the health port must differ.
            self.error(cw, f"CUSTOPS_HEALTH_PORT {health} must differ from the gRPC port {port} "
                       f"of custops-{svc}")
            return None
        return health

    def check_ports_and_probes(self, cw, c, env, svc, port, health_port) -> None:
        grpc_port = self.container_port(c, "grpc")
        if grpc_port != port:
            self.error(
                cw,
                f"container port named grpc is {grpc_port}, but custops-{svc} listens on {port}",
            )
        declared = self.container_port(c, "grpc-health")
        if health_port != port and declared != health_port:
            found = "missing" if declared is None else declared
            self.error(cw, f"container port named grpc-health is {found}, but custops-{svc} "
                       f"serves health on CUSTOPS_HEALTH_PORT {health_port}")
        if health_port == port and declared is not None:
            self.error(cw, f"declares container port grpc-health ({declared}), but "
                       "CUSTOPS_HEALTH_PORT is not set, so nothing listens there")
        # Set at all (a Secret's value counts): the server then speaks TLS only, which the
        # kubelet's gRPC probe cannot (plaintext, no client certificate).
        tls = "CUSTOPS_TLS_CERT_FILE" in env and env["CUSTOPS_TLS_CERT_FILE"] != ""
        if tls and health_port == port:
            self.error(cw, f"TLS is on, so the kubelet cannot probe the gRPC port {port}; set "
                       "CUSTOPS_HEALTH_PORT (plaintext, health only) and probe that")
        where_health = (f"CUSTOPS_HEALTH_PORT {health_port}" if health_port != port
                        else f"its gRPC port {port}")
        for name in PROBES:
            probe = c.get(name)
            if not probe:
                self.error(cw, f"{name} is missing")
                continue
            others = sorted(k for k in ("tcpSocket", "httpGet", "exec") if k in probe)
            if others or "grpc" not in probe:
                self.error(cw, f"{name} must be a native grpc probe on grpc.health.v1, not "
                           f"{'/'.join(others) or 'nothing'}")
                continue
            target = probe["grpc"].get("port")
            if probe["grpc"].get("service"):
                self.error(cw, f"{name} asks for service {probe['grpc']['service']!r}; "
                           "the binaries report overall health under \"\"")
            if target != health_port:
                self.error(cw, f"{name} targets port {target}, but custops-{svc} serves health "
                           f"on {where_health}")

    def check_grace(self, where, template, c, env) -> None:
        raw = env.get("CUSTOPS_SHUTDOWN_GRACE_SECS")
        drain = self.code.shutdown_grace_default if raw in (None, "") else int(raw)
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {})
        pause = int(pre_stop.get("seconds", 0)) if pre_stop else 0
        grace = template.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        if grace <= drain + pause:
            self.error(
                where,
                f"terminationGracePeriodSeconds {grace} must exceed the preStop pause ({pause} s) "
                f"plus CUSTOPS_SHUTDOWN_GRACE_SECS ({drain} s)",
            )

    # -- what surrounds a server -------------------------------------------------------------

    def check_server_surroundings(self, docs, where, obj, template, c, svc, port) -> None:
        labels = template.get("metadata", {}).get("labels", {})
        name = obj["metadata"]["name"]
        services = [d for d in docs if d.get("kind") == "Service"
                    and selects(d.get("spec", {}).get("selector"), labels)]
        if not services:
            self.error(where, "no Service selects its pods")
        for s in services:
            for p in s["spec"].get("ports", []):
                target = self.container_port(c, p.get("targetPort", p.get("port")))
                if target != port:
                    self.error(f"{ref(s)} port {p.get('name')}",
                               f"targets {target}, but custops-{svc} serves on {port}")
                if not str(p.get("name", "")).startswith("grpc"):
                    self.error(f"{ref(s)}", "its port must be named grpc")
        hpas = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"
                and d["spec"]["scaleTargetRef"].get("name") == name
                and d["spec"]["scaleTargetRef"].get("kind") == "Deployment"]
        if not hpas:
            self.error(where, "no HorizontalPodAutoscaler scales it")
        for hpa in hpas:
            self.check_scale_down(hpa, template)
        pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"
                and selects(d["spec"].get("selector"), labels)]
        if not pdbs:
            self.error(where, "no PodDisruptionBudget covers it")
        for pdb, hpa in ((p, h) for p in pdbs for h in hpas):
            floor = hpa["spec"].get("minReplicas", 1)
            min_available = pdb["spec"].get("minAvailable")
            if isinstance(min_available, int) and min_available >= floor:
                self.error(ref(pdb), f"minAvailable {min_available} is not below the HPA's "
                           f"minReplicas {floor}: at the floor no node drain could evict a pod")
            if pdb["spec"].get("maxUnavailable") in (0, "0%"):
                self.error(ref(pdb), "maxUnavailable 0 blocks every node drain")
        if self.pooler.present():
            egress_ok = False
            for d in docs:
                if d.get("kind") != "NetworkPolicy" or "Egress" not in d["spec"].get(
                        "policyTypes", []) or not selects(d["spec"].get("podSelector"), labels):
                    continue
                for rule in d["spec"].get("egress", []) or []:
                    ports = {p.get("port") for p in rule.get("ports") or []}
                    peers = rule.get("to") or []
                    if (not ports or ports & self.pooler.ports) and (not peers or any(
                            "podSelector" in t and "namespaceSelector" not in t
                            and any(selects(t["podSelector"], pl) for pl in self.pooler.pod_labels)
                            for t in peers)):
                        egress_ok = True
            if not egress_ok:
                self.error(where, f"no NetworkPolicy lets it reach the pooler on "
                           f"{sorted(self.pooler.ports)}")
        admitted = False
        for d in docs:
            if d.get("kind") != "NetworkPolicy" or not selects(d["spec"].get("podSelector"), labels):
                continue
            for rule in d["spec"].get("ingress", []) or []:
                ports = rule.get("ports") or [{}]
                if any(self.container_port(c, p.get("port", port)) == port for p in ports):
                    admitted = True
        if not admitted:
            self.error(where, f"no NetworkPolicy admits ingress to port {port}")


    def check_scale_down(self, hpa: dict, template: dict) -> None:
        """Scale-in removes one replica at a time, each after the previous one's work was taken
        over: its feed batch redone and its leased rewards free again (grace period + lease),
        and not before MIN_SCALE_DOWN_WINDOW_SECS after a peak."""
        where = ref(hpa)
        down = (hpa["spec"].get("behavior") or {}).get("scaleDown")
        if not down:
            self.error(where, "has no behavior.scaleDown; the default removes every surplus "
                       "replica at once after 5 minutes")
            return
        if down.get("selectPolicy") == "Disabled":
            return
        window = down.get("stabilizationWindowSeconds", 300)
        if window < MIN_SCALE_DOWN_WINDOW_SECS:
            self.error(where, f"scaleDown.stabilizationWindowSeconds {window} is below "
                       f"{MIN_SCALE_DOWN_WINDOW_SECS}")
        grace = template.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        takeover = grace + self.code.reward_lease_secs
        policies = down.get("policies") or []
        if not policies:
            self.error(where, "scaleDown has no policies; the default removes up to 100 % of "
                       "the replicas every 15 s")
        for pol in policies:
            if pol.get("type") != "Pods" or pol.get("value") != 1:
                self.error(where, f"scaleDown policy {pol.get('type')} {pol.get('value')} may "
                           "remove more than one replica at a time; use type Pods, value 1")
            if pol.get("periodSeconds", 0) <= takeover:
                self.error(where, f"scaleDown policy periodSeconds {pol.get('periodSeconds')} "
                           f"must exceed the grace period ({grace} s) plus the reward lease "
                           f"({self.code.reward_lease_secs} s), so a removed replica's work is "
                           "taken over before the next goes")


def check(code: Code, files: list[tuple[str, list[dict]]]) -> list[str]:
    checker = Checker(code)
    for path, docs in files:
        checker.check_file(path, docs)
    return list(dict.fromkeys(checker.errors))  # one line per problem, in the order found


def check_component_ini(code: Code) -> list[str]:
    """The pgbouncer component's own pgbouncer.ini, with the services' default timeouts: checked
    even when no overlay enables it."""
    return check_pgbouncer_ini(str(PGBOUNCER_INI.relative_to(ROOT)),
                               PGBOUNCER_INI.read_text(encoding="utf-8"), code,
                               code.db_timeout_defaults)


# ---------------------------------------------------------------------------------------------
# Self-test


def _first(docs, kind, pred=lambda d: True):
    return next(d for d in docs if d.get("kind") == kind and pred(d))


def _server(docs):
    return _first(docs, "Deployment", lambda d: is_custops_image(
        d["spec"]["template"]["spec"]["containers"][0].get("image", "")))


def _container(d):
    return pod_template(d)["spec"]["containers"][0]


def _custops_configmap(docs):
    return _first(docs, "ConfigMap", lambda d: d["metadata"]["name"].startswith("custops-config"))


def _misspell_configmap(docs):
    data = _custops_configmap(docs)["data"]
    data["CUSTOPS_LOG_FROMAT"] = data.pop("CUSTOPS_LOG_FORMAT")


def _misspell_env(docs):
    for e in _container(_server(docs))["env"]:
        if e["name"] == "DATABASE_URL":
            e["name"] = "DATABSE_URL"


def _set_env(docs, name, value):
    """Sets (or, with value None, removes) a variable of the first server, wherever it was."""
    _custops_configmap(docs)["data"].pop(name, None)
    c = _container(_server(docs))
    c["env"] = [e for e in c["env"] if e["name"] != name]
    if value is not None:
        c["env"].append({"name": name, "value": str(value)})


def _main_port(docs):
    return next(p["containerPort"] for p in _container(_server(docs))["ports"]
                if p["name"] == "grpc")


def _tcp_probe(docs):
    probe = _container(_server(docs))["readinessProbe"]
    probe["tcpSocket"] = {"port": probe.pop("grpc")["port"]}


def _probe_main_port(docs):
    # Health moved to its own port (where there is one; else set one) but the probes stay on
    # the gRPC port.
    c = _container(_server(docs))
    port = _main_port(docs)
    for name in PROBES:
        c[name]["grpc"]["port"] = port
    if not any(p["name"] == "grpc-health" for p in c["ports"]):
        _set_env(docs, "CUSTOPS_HEALTH_PORT", 8081)
        c["ports"].append({"name": "grpc-health", "containerPort": 8081, "protocol": "TCP"})


def _tls_without_health_port(docs):
    # Turn TLS on where it was off, drop the health port where there was one, and probe the
    # gRPC port: valid without TLS, unprobeable with it.
    data = _custops_configmap(docs)["data"]
    data["CUSTOPS_TLS_CERT_FILE"] = "/etc/custops/tls/tls.crt"
    data["CUSTOPS_TLS_KEY_FILE"] = "/etc/custops/tls/tls.key"
    _set_env(docs, "CUSTOPS_HEALTH_PORT", None)
    c = _container(_server(docs))
    c["ports"] = [p for p in c["ports"] if p["name"] != "grpc-health"]
    for name in PROBES:
        c[name]["grpc"]["port"] = _main_port(docs)


def _drop_required_unless(docs):
    # Turn auth on where it was off, or remove the key where it was on: either way the token
    # key is now required and missing.
    data = _custops_configmap(docs)["data"]
    data["CUSTOPS_AUTH_MODE"] = "jwt"
    c = _container(_server(docs))
    c["env"] = [e for e in c["env"] if e["name"] != "CUSTOPS_AUTH_JWT_SECRET"]


def _del(path):
    def mutate(docs):
        target = _server(docs)
        *parents, last = path
        node = target
        for p in parents:
            node = node[p] if not callable(p) else p(node)
        del node[last]
    return mutate


def _hpa(docs):
    name = _server(docs)["metadata"]["name"]
    return _first(docs, "HorizontalPodAutoscaler",
                  lambda d: d["spec"]["scaleTargetRef"].get("name") == name)


def _scale_down(docs):
    return _hpa(docs)["spec"]["behavior"]["scaleDown"]


def _pdb_at_floor(docs):
    labels = pod_template(_server(docs))["metadata"]["labels"]
    pdb = _first(docs, "PodDisruptionBudget", lambda d: selects(d["spec"]["selector"], labels))
    pdb["spec"].pop("maxUnavailable", None)
    pdb["spec"]["minAvailable"] = _hpa(docs)["spec"].get("minReplicas", 1)


_POOLED_URL = "postgres://custops_x@pgbouncer:6432/x"


def _pooled_without_direct(docs):
    _set_env(docs, "DATABASE_URL", _POOLED_URL)
    _set_env(docs, "DATABASE_DIRECT_URL", None)


def _migration_through_pooler(docs):
    job = _first(docs, "Job")
    for e in _container(job)["env"]:
        if e["name"] == "DATABASE_URL":
            e.pop("valueFrom", None)
            e["value"] = _POOLED_URL


def _pooler_ini(docs, edit):
    cm = _first(docs, "ConfigMap", lambda d: "pgbouncer.ini" in (d.get("data") or {}))
    cm["data"]["pgbouncer.ini"] = edit(cm["data"]["pgbouncer.ini"])


def _has_pooler(docs):
    return find_pooler(docs).present()


def _drop_pooler_egress(docs):
    docs[:] = [d for d in docs if not (d.get("kind") == "NetworkPolicy" and any(
        any(selects(t.get("podSelector"), pl) for pl in find_pooler(docs).pod_labels)
        for rule in d["spec"].get("egress", []) or [] for t in rule.get("to") or []
        if "podSelector" in t))]


def _session_mode(text):
    return re.sub(r"(?m)^pool_mode\s*=.*$", "pool_mode = session", text)


_C = _container  # a path step: the first container of the pod template

BREAKAGES = [
    ("a misspelt variable in the ConfigMap", _misspell_configmap, "CUSTOPS_LOG_FROMAT"),
    ("a misspelt variable in a Deployment", _misspell_env, "DATABSE_URL"),
    ("the token key missing with auth on", _drop_required_unless, "CUSTOPS_AUTH_JWT_SECRET"),
    ("no startup probe", _del([_C, "startupProbe"]), "startupProbe is missing"),
    ("no readiness probe", _del([_C, "readinessProbe"]), "readinessProbe is missing"),
    ("no liveness probe", _del([_C, "livenessProbe"]), "livenessProbe is missing"),
    ("no resource limits", _del([_C, "resources", "limits"]), "resources.limits.memory"),
    ("no container securityContext", _del([_C, "securityContext"]),
     "container securityContext is missing"),
    ("no pod securityContext", _del(["spec", "template", "spec", "securityContext"]),
     "pod securityContext is missing"),
    ("a TCP probe", _tcp_probe, "readinessProbe must be a native grpc probe"),
    ("a probe on the wrong port",
     lambda docs: _container(_server(docs))["readinessProbe"].update({"grpc": {"port": 8080}}),
     "readinessProbe targets port 8080"),
    ("probes on the gRPC port while health has its own", _probe_main_port,
     r"livenessProbe targets port \d+, but custops-\w+ serves health on CUSTOPS_HEALTH_PORT \d+"),
    ("a health port the probes do not follow",
     lambda docs: _set_env(docs, "CUSTOPS_HEALTH_PORT", 8082),
     r"startupProbe targets port \d+, but custops-\w+ serves health on CUSTOPS_HEALTH_PORT 8082"),
    ("a health port equal to the gRPC port",
     lambda docs: _set_env(docs, "CUSTOPS_HEALTH_PORT", _main_port(docs)),
     "must differ from the gRPC port"),
    ("TLS on without a health port", _tls_without_health_port,
     "TLS is on, so the kubelet cannot probe"),
    ("a grace period shorter than the drain",
     lambda docs: pod_template(_server(docs))["spec"].update(terminationGracePeriodSeconds=20),
     "terminationGracePeriodSeconds 20"),
    ("a port variable that moves the server away from its probes",
     lambda docs: _container(_server(docs))["env"].append(
         {"name": f"CUSTOPS_{_server(docs)['metadata']['name'].upper()}_PORT", "value": "6000"}),
     "serves on 6000"),
    # The pooler and scale-in. A fourth element limits a breakage to the renderings it can
    # break (those running a pooler); the rest apply to every overlay.
    ("a server behind the pooler without a direct URL",
     lambda docs: _set_env(docs, "DATABASE_DIRECT_URL", None),
     "comes from a Secret and a pooler runs beside it, but neither DATABASE_DIRECT_URL",
     _has_pooler),
    ("DATABASE_URL naming the pooler without a direct URL", _pooled_without_direct,
     "DATABASE_URL names the pooler, but neither DATABASE_DIRECT_URL"),
    ("a direct URL naming the pooler",
     lambda docs: _set_env(docs, "DATABASE_DIRECT_URL", _POOLED_URL),
     "DATABASE_DIRECT_URL names the pooler"),
    ("a migration Job through the pooler", _migration_through_pooler,
     "migrations take a session-level advisory lock"),
    ("no egress from the servers to the pooler", _drop_pooler_egress,
     "no NetworkPolicy lets it reach the pooler", _has_pooler),
    ("the rendered pgbouncer.ini in session mode", lambda docs: _pooler_ini(docs, _session_mode),
     r"pgbouncer.ini: pool_mode is 'session'", _has_pooler),
    ("an HPA without scale-down behaviour", lambda docs: _hpa(docs)["spec"].pop("behavior"),
     "has no behavior.scaleDown"),
    ("an HPA removing four replicas at a time",
     lambda docs: _scale_down(docs)["policies"][0].update(value=4),
     "may remove more than one replica at a time"),
    ("an HPA removing a replica every minute",
     lambda docs: _scale_down(docs)["policies"][0].update(periodSeconds=60),
     r"periodSeconds 60 must exceed the grace period \(35 s\) plus the reward lease"),
    ("an HPA without a stabilization window",
     lambda docs: _scale_down(docs).update(stabilizationWindowSeconds=0),
     "stabilizationWindowSeconds 0 is below"),
    ("a PDB at the HPA's floor", _pdb_at_floor, "is not below the HPA's minReplicas"),
]

# Broken copies of the component's own pgbouncer.ini (checked whether or not an overlay uses it).
INI_BREAKAGES = [
    ("session pooling", _session_mode, "pool_mode is 'session'"),
    ("no reset after each transaction",
     lambda t: re.sub(r"(?m)^server_reset_query_always\s*=.*\n", "", t),
     "server_reset_query must be DEALLOCATE ALL with server_reset_query_always = 1"),
    ("extra_float_digits not ignored",
     lambda t: re.sub(r"(?m)^ignore_startup_parameters\s*=.*\n", "", t),
     "ignore_startup_parameters must include extra_float_digits"),
    ("a service without its alias", lambda t: re.sub(r"(?m)^loyalty\s*=.*\n", "", t),
     r"no \[databases\] alias loyalty"),
    ("an alias on another service's schema",
     lambda t: t.replace("search_path TO feedback", "search_path TO profiles"),
     "database feedback: connect_query must set search_path to feedback"),
    ("a statement timeout other than the services'",
     lambda t: t.replace("statement_timeout = 5000", "statement_timeout = 30000", 1),
     "connect_query must set statement_timeout to 5000 ms"),
    ("a database in session mode",
     lambda t: re.sub(r"(?m)^(segmentation\s*=.*)$", r"\1 pool_mode=session", t),
     "database segmentation overrides pool_mode"),
]

_SAMPLE_RS = """
pub const VARIABLES: &[Variable] = &[
    Variable::required("DATABASE_URL", "Postgres URL (with \\"quotes\\")"),
    Variable::optional("CUSTOPS_{SVC}_PORT", "gRPC port (default 50051-50054)"),
    Variable::required_unless("CUSTOPS_AUTH_JWT_SECRET", ("CUSTOPS_AUTH_MODE", "disabled"), "key"),
];
"""


def self_test(code: Code, files: list[tuple[str, list[dict]]]) -> int:
    failures = []
    parsed = parse_variables(_SAMPLE_RS)
    if parsed != [
        Variable("DATABASE_URL", "required", None),
        Variable("CUSTOPS_{SVC}_PORT", "optional", None),
        Variable("CUSTOPS_AUTH_JWT_SECRET", "required_unless", ("CUSTOPS_AUTH_MODE", "disabled")),
    ]:
        failures.append(f"parse_variables misread the sample: {parsed}")
    try:
        parse_variables(_SAMPLE_RS.replace("Variable::optional(", "Variable::maybe("))
        failures.append("parse_variables accepted an entry it cannot read")
    except ValueError:
        pass
    if "DATABASE_URL" not in [v.name for v in code.variables]:
        failures.append("config.rs VARIABLES has no DATABASE_URL: the parser is off")

    baseline = check(code, files) + check_component_ini(code)
    if baseline:
        failures.append("the unbroken manifests fail:\n  " + "\n  ".join(baseline))
    count = 0
    for path, docs in files:
        for what, mutate, expected, *only_where in BREAKAGES:
            if only_where and not only_where[0](docs):
                continue
            broken = copy.deepcopy(docs)
            mutate(broken)
            errors = check(code, [(path, broken)])
            count += 1
            if not any(re.search(expected, e) for e in errors):
                failures.append(
                    f"{path}: {what}: not refused (wanted an error matching {expected!r}; "
                    f"got {errors or 'none'})"
                )
    ini = PGBOUNCER_INI.read_text(encoding="utf-8")
    for what, mutate, expected in INI_BREAKAGES:
        broken = mutate(ini)
        errors = check_pgbouncer_ini("pgbouncer.ini", broken, code, code.db_timeout_defaults)
        count += 1
        if broken == ini or not any(re.search(expected, e) for e in errors):
            failures.append(f"{PGBOUNCER_INI.relative_to(ROOT)}: {what}: not refused (wanted "
                            f"an error matching {expected!r}; got {errors or 'none'})")
    for f in failures:
        print(f"k8s-manifest-check self-test: FAILED {f}", file=sys.stderr)
    if failures:
        return 1
    print(
        f"k8s-manifest-check self-test: all {count} broken copies refused "
        f"({len(BREAKAGES)} breakages x {len(files)} overlays where they apply, "
        f"{len(INI_BREAKAGES)} of pgbouncer.ini), originals accepted"
    )
    return 0


def main(argv: list[str]) -> int:
    selftest = "--self-test" in argv
    paths = [a for a in argv if a != "--self-test"]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        code = read_code()
    except (OSError, ValueError) as e:
        print(f"k8s-manifest-check: cannot read the code: {e}", file=sys.stderr)
        return 1
    files = load(paths)
    if selftest:
        return self_test(code, files)
    errors = check(code, files) + check_component_ini(code)
    for e in errors:
        print(f"k8s-manifest-check: {e}", file=sys.stderr)
    if errors:
        print(f"k8s-manifest-check: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"k8s-manifest-check: {len(paths)} overlay(s) agree with the code "
        f"({len(code.variables)} variables from config.rs, ports {code.default_ports})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
