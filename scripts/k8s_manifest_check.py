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

The self-test breaks copies of the rendered manifests in the ways that matter (a misspelt
variable, a removed probe, limit or securityContext, a TCP probe, a probe on the wrong port, a
health port the probes do not follow or equal to the gRPC port, TLS without a health port, a
short grace period, a missing required variable) and fails unless the check refuses every one
of them and accepts the originals.
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_RS = ROOT / "libs/common/src/config.rs"
SERVICE_RS = ROOT / "libs/common/src/service.rs"

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


def read_code() -> Code:
    config = CONFIG_RS.read_text(encoding="utf-8")
    service = SERVICE_RS.read_text(encoding="utf-8")
    return Code(
        parse_variables(config),
        parse_default_ports(service),
        parse_shutdown_grace_default(config),
    )


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


def is_custops_image(image: str) -> bool:
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return name == "custops"


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
        if not any(d.get("kind") == "HorizontalPodAutoscaler"
                   and d["spec"]["scaleTargetRef"].get("name") == name
                   and d["spec"]["scaleTargetRef"].get("kind") == "Deployment" for d in docs):
            self.error(where, "no HorizontalPodAutoscaler scales it")
        if not any(d.get("kind") == "PodDisruptionBudget"
                   and selects(d["spec"].get("selector"), labels) for d in docs):
            self.error(where, "no PodDisruptionBudget covers it")
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


def check(code: Code, files: list[tuple[str, list[dict]]]) -> list[str]:
    checker = Checker(code)
    for path, docs in files:
        checker.check_file(path, docs)
    return list(dict.fromkeys(checker.errors))  # one line per problem, in the order found


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

    baseline = check(code, files)
    if baseline:
        failures.append("the unbroken manifests fail:\n  " + "\n  ".join(baseline))
    count = 0
    for path, docs in files:
        for what, mutate, expected in BREAKAGES:
            broken = copy.deepcopy(docs)
            mutate(broken)
            errors = check(code, [(path, broken)])
            count += 1
            if not any(re.search(expected, e) for e in errors):
                failures.append(
                    f"{path}: {what}: not refused (wanted an error matching {expected!r}; "
                    f"got {errors or 'none'})"
                )
    for f in failures:
        print(f"k8s-manifest-check self-test: FAILED {f}", file=sys.stderr)
    if failures:
        return 1
    print(
        f"k8s-manifest-check self-test: all {count} broken copies refused "
        f"({len(BREAKAGES)} breakages x {len(files)} overlays), originals accepted"
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
    errors = check(code, files)
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
