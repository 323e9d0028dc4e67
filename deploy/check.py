#!/usr/bin/env python3
"""Checks of deploy/ that a schema validator and promtool cannot make.

    check.py kubernetes RENDERED.yaml OUT_DIR     the manifests fit together and
                                                  keep tailgate's contracts; writes the
                                                  policy file and each node's config
                                                  file and environment to OUT_DIR, for
                                                  `tailgate policy check` and a start
    check.py metrics                             every tailgate_ metric the rules and
                                                  the dashboard use is defined in the code
    check.py alert-tests                         every alert has a unit test that fires
                                                  it and one that must not
    check.py dashboard PROMETHEUS_URL            the dashboard's layout, and every query
                                                  runs on a real Prometheus
    check.py scrape-config OUT.yaml              scrape.yaml, made checkable by Debian's
                                                  promtool (built without Kubernetes SD)
    check.py dockerfile                          the binaries, files and user the
                                                  Dockerfile names are right

Each prints what it checked and exits 1 with every failure listed.
"""

import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "tests"
DASHBOARD = DEPLOY / "grafana" / "tailgate.json"
SCRAPE = DEPLOY / "prometheus" / "scrape.yaml"
# Crates whose sources define metrics.
SOURCE_DIRS = ["src", "proto/src", "policy/src", "sampler/src", "lb-exporter/src", "loadtest/src"]

failures = []


def fail(message):
    failures.append(message)


def finish(what):
    if failures:
        print(f"FAILED: {what}")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print(f"ok: {what}")


def duration_seconds(text):
    """A Go/humantime duration (`5s`, `1m30s`, `250ms`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# ---------------------------------------------------------------- kubernetes


def check_kubernetes(rendered_path, out_dir):
    docs = [d for d in yaml.safe_load_all(Path(rendered_path).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    def get(kind, name):
        obj = by_kind.get(kind, {}).get(name)
        if obj is None:
            fail(f"no {kind} {name}")
        return obj

    namespaces = list(by_kind.get("Namespace", {}))
    if len(namespaces) != 1:
        fail(f"expected one Namespace, got {namespaces}")
    namespace = namespaces[0] if namespaces else "?"
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != namespace:
            fail(f"{d['kind']} {d['metadata']['name']} is not in namespace {namespace}")

    sts = get("StatefulSet", "tailgate-sampler")
    headless = get("Service", "tailgate-sampler")
    deploy = get("Deployment", "tailgate-lb")
    lb_svc = get("Service", "tailgate-lb")
    hpa = get("HorizontalPodAutoscaler", "tailgate-lb")
    if None in (sts, headless, deploy, lb_svc, hpa):
        return

    def selects(selector, labels):
        return all(labels.get(k) == v for k, v in selector.items())

    # Headless Service: DNS answers with ready samplers only.
    hs = headless["spec"]
    if hs.get("clusterIP") != "None":
        fail("the sampler Service is not headless (clusterIP: None)")
    if hs.get("publishNotReadyAddresses") is not False:
        fail("the sampler Service must set publishNotReadyAddresses: false")
    if sts["spec"]["serviceName"] != headless["metadata"]["name"]:
        fail("the StatefulSet's serviceName is not the headless Service")

    # The LB Service: what agents export to.
    ls = lb_svc["spec"]
    if ls.get("type", "ClusterIP") != "ClusterIP":
        fail("the LB Service is not ClusterIP")
    if sorted(p["port"] for p in ls["ports"]) != [4317, 4318]:
        fail(f"the LB Service must expose 4317 and 4318, has {[p['port'] for p in ls['ports']]}")

    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", "tailgate-lb"):
        fail(f"the HPA scales {target}, not the LB Deployment")
    if "replicas" in deploy["spec"]:
        fail("the LB Deployment sets replicas, which fights the HPA")

    for workload, svc in ((sts, headless), (deploy, lb_svc)):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]
        labels = pod["metadata"]["labels"]
        if not selects(workload["spec"]["selector"]["matchLabels"], labels):
            fail(f"{name}: its selector does not match its pods")
        if not selects(svc["spec"]["selector"], labels):
            fail(f"Service {svc['metadata']['name']} does not select the {name} pods")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                if selects(p["spec"]["selector"]["matchLabels"], labels)]
        if len(pdbs) != 1:
            fail(f"{name}: expected one PodDisruptionBudget, got {len(pdbs)}")
        check_pod(name, pod, by_kind, workload["spec"])

    spec = sts["spec"]["template"]["spec"]
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    ]
    if not any(selects(t["labelSelector"]["matchLabels"], sts["spec"]["template"]["metadata"]["labels"])
               for t in terms):
        fail("the samplers have no pod anti-affinity against each other")

    # The sampler's config, as the pods get it: file, then environment.
    container = spec["containers"][0]
    write_node_files(container, spec, by_kind, "sampler", sts["metadata"]["name"], out_dir)
    config = node_config(container, spec, by_kind, "sampler")
    if config is not None:
        grace = duration_seconds(config.get("shutdown", {}).get("grace", "5s"))
        drain = duration_seconds(config.get("shutdown", {}).get("drain_timeout", "10s"))
        period = spec.get("terminationGracePeriodSeconds", 30)
        if period <= grace + drain:
            fail(f"terminationGracePeriodSeconds {period} is not longer than the shutdown "
                 f"grace {grace}s + drain_timeout {drain}s")
        check_policy_mount(container, spec, by_kind, config, out_dir)
        check_storage(sts, container, config)
        backend = config.get("exporter", {}).get("endpoint", "")
        if not backend.startswith("http://"):
            fail(f"sampler exporter.endpoint {backend!r} is not http://host:port")
        cluster = config.get("cluster")
        if not cluster:
            fail("the samplers have no cluster block: no forwarding, no hand-over")
        else:
            handover = duration_seconds(cluster.get("handover_timeout", "5s"))
            if handover > drain:
                fail(f"cluster.handover_timeout {handover}s is longer than shutdown.drain_timeout {drain}s")
            env = {e["name"]: e for e in container.get("env", [])}
            self_value = env.get("TAILGATE__CLUSTER__SELF", {}).get("value", "")
            ip_var = re.fullmatch(r"\$\((\w+)\)", self_value)
            ip_field = env.get(ip_var.group(1), {}) if ip_var else {}
            if ip_field.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
                fail("TAILGATE__CLUSTER__SELF is not the pod's IP: the sampler would not find itself on the ring")

    lb_spec = deploy["spec"]["template"]["spec"]
    write_node_files(lb_spec["containers"][0], lb_spec, by_kind, "lb", deploy["metadata"]["name"], out_dir)
    lb_config = node_config(lb_spec["containers"][0], lb_spec, by_kind, "lb")
    if lb_config is not None:
        drain = duration_seconds(lb_config.get("drain_timeout", "10s"))
        period = lb_spec.get("terminationGracePeriodSeconds", 30)
        if period <= drain:
            fail(f"LB terminationGracePeriodSeconds {period} is not longer than its drain_timeout {drain}s")
        if config is not None and config.get("cluster", {}).get("resolver") != lb_config.get("resolver"):
            fail("the samplers' cluster.resolver differs from the LBs' resolver: they would build different rings")
        dns = lb_config.get("resolver", {}).get("dns", {})
        want = f"{headless['metadata']['name']}.{namespace}.svc."
        if not dns.get("hostname", "").startswith(want):
            fail(f"the LB resolves {dns.get('hostname')!r}, not the headless Service {want}...")
        if dns.get("port", 4317) != 4317:
            fail("the LB resolves members on a port other than 4317")

    print(f"checked {len(docs)} objects in namespace {namespace}")


def check_pod(name, pod, by_kind, workload_spec):
    spec = pod["spec"]
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        fail(f"{name}: pods do not set runAsNonRoot")
    annotations = pod["metadata"].get("annotations", {})
    for c in spec["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if (ports.get("otlp-grpc"), ports.get("otlp-http"), ports.get("admin")) != (4317, 4318, 8888):
            fail(f"{name}: container ports are {ports}, not otlp-grpc 4317, otlp-http 4318, admin 8888")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or ports.get(get.get("port"), get.get("port")) != 8888:
                fail(f"{name}: {probe} is not GET {path} on the admin port")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    fail(f"{name}: no {kind}.{r}")
        env = {e["name"]: e for e in c.get("env", [])}
        node = env.get("TAILGATE__NODE", {}).get("valueFrom", {}).get("fieldRef", {})
        if node.get("fieldPath") != "metadata.name":
            fail(f"{name}: TAILGATE__NODE (the metrics' node label) is not the pod name")
        if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            fail(f"{name}: allowPrivilegeEscalation is not false")
        # Files the config names through the environment (TLS certificates,
        # token files) must be under a mounted volume.
        mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])]
        for e in c.get("env", []):
            for path in re.findall(r"/etc/tailgate/[^\s,}'\"]+", e.get("value", "")):
                if not any(path.startswith(m) for m in mounts):
                    fail(f"{name}: env {e['name']} names {path}, which no volume is mounted over")
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != "8888":
        fail(f"{name}: pods lack the prometheus.io scrape annotations for port 8888")
    for v in spec.get("volumes", []):
        if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
            fail(f"{name}: volume {v['name']} uses a missing ConfigMap {v['configMap']['name']}")
    names = {v["name"] for v in spec.get("volumes", [])}
    names |= {t["metadata"]["name"] for t in workload_spec.get("volumeClaimTemplates", [])}
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] not in names:
                fail(f"{name}: mount {m['mountPath']} uses a missing volume {m['name']}")


def check_storage(sts, container, config):
    """With `storage:`, its path is on a volume of its own per pod (a
    volumeClaimTemplate), writable, so a restarted pod finds its log."""
    storage = config.get("storage")
    if not storage:
        print("the samplers keep no write-ahead log (storage is off)")
        return
    path = Path(str(storage.get("path", "")))
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = [m for m in container.get("volumeMounts", [])
              if m["name"] in claims and (path == Path(m["mountPath"]) or Path(m["mountPath"]) in path.parents)]
    if not mounts:
        fail(f"storage.path {path} is not on a volumeClaimTemplate's volume: a restarted pod would lose its log")
    elif any(m.get("readOnly") for m in mounts):
        fail(f"storage.path {path} is mounted read-only")
    sc = sts["spec"]["template"]["spec"].get("securityContext", {})
    if mounts and sc.get("fsGroup") is None:
        fail("the samplers write their log as non-root, but the pods set no fsGroup for its volume")


def write_node_files(container, spec, by_kind, role, pod_prefix, out_dir):
    """OUT_DIR/ROLE.yaml, the --config file as mounted, and OUT_DIR/ROLE.env,
    the container's TAILGATE__ variables (one NAME=VALUE a line), so
    deploy/test.sh can start the node with exactly what a pod gets."""
    args = container.get("args", [])
    if "--config" not in args:
        return
    data = mounted_file(container, spec, by_kind, Path(args[args.index("--config") + 1]))
    if data is None:
        return
    (Path(out_dir) / f"{role}.yaml").write_text(data)
    env = pod_env(container, pod_prefix, role)
    (Path(out_dir) / f"{role}.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))


def pod_env(container, pod_prefix, role):
    """The container's environment as the kubelet makes it for the first
    pod on a loopback machine: the pod's name, 127.0.0.1 for its IP, and
    $(VAR) references to earlier variables expanded."""
    fields = {"metadata.name": f"{pod_prefix}-0", "status.podIP": "127.0.0.1"}
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                    lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") in fields:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            fail(f"{role}: env {e['name']} comes from where deploy/test.sh cannot follow")
    return env


def node_config(container, spec, by_kind, role):
    """The node's config: the --config file from its ConfigMap, then env overrides."""
    args = container.get("args", [])
    if not args or args[0] != role or "--config" not in args:
        fail(f"{role}: container args {args} do not run `tailgate {role} --config FILE`")
        return None
    path = Path(args[args.index("--config") + 1])
    data = mounted_file(container, spec, by_kind, path)
    if data is None:
        fail(f"{role}: the config file {path} is not in a mounted ConfigMap")
        return None
    config = yaml.safe_load(data) or {}
    for name, value in pod_env(container, "pod", role).items():
        if name.startswith("TAILGATE__"):
            keys = name[len("TAILGATE__"):].lower().split("__")
            node = config
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = yaml.safe_load(value)
    return config


def mounted_file(container, spec, by_kind, path):
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        mount = Path(m["mountPath"])
        if path.parent == mount and m["name"] in volumes and "configMap" in volumes[m["name"]]:
            cm = by_kind.get("ConfigMap", {}).get(volumes[m["name"]]["configMap"]["name"])
            if cm is not None:
                return cm.get("data", {}).get(path.name)
    return None


def check_policy_mount(container, spec, by_kind, config, out_dir):
    policy = Path(config.get("policy_file", ""))
    mounts = [m for m in container.get("volumeMounts", []) if Path(m["mountPath"]) == policy.parent]
    if len(mounts) != 1:
        fail(f"policy_file {policy} is not in one mounted directory")
        return
    mount = mounts[0]
    if "subPath" in mount or "subPathExpr" in mount:
        fail("the policy ConfigMap is mounted with subPath: the kubelet never updates it, so no live reload")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm_name = volume.get("configMap", {}).get("name", "")
    if cm_name != "tailgate-policy":
        fail(f"the policy volume uses ConfigMap {cm_name!r}: a hash-suffixed name would restart "
             "the pods on every policy change instead of reloading it live")
    text = mounted_file(container, spec, by_kind, policy)
    if text is None:
        fail(f"ConfigMap {cm_name} has no key {policy.name}")
        return
    out = Path(out_dir) / "policy.yaml"
    out.write_text(text)
    print(f"policy file written to {out}")


# ------------------------------------------------------------------- metrics


def used_metric_names():
    text = ALERTS.read_text() + DASHBOARD.read_text()
    return sorted(set(re.findall(r"\btailgate_[a-z0-9_]+", text)))


def check_metrics():
    defined = set()
    for d in SOURCE_DIRS:
        for f in (ROOT / d).rglob("*.rs"):
            defined.update(re.findall(r'"(tailgate_[a-z0-9_]+)"', f.read_text()))
    for name in used_metric_names():
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in defined and base not in defined:
            fail(f"{name} is used by deploy/ but defined nowhere in {', '.join(SOURCE_DIRS)}")
    print(f"{len(used_metric_names())} metric names used by the rules and the dashboard")


def check_alert_tests():
    alerts = [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    fired, quiet = set(), set()
    for f in ALERT_TESTS.glob("*.yaml"):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for a in t.get("alert_rule_test", []):
                (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    for a in alerts:
        if a not in fired:
            fail(f"alert {a} has no test in which it fires")
        if a not in quiet:
            fail(f"alert {a} has no test in which it must not fire")
    for a in (fired | quiet) - set(alerts):
        fail(f"tests name an alert that does not exist: {a}")
    print(f"{len(alerts)} alerts, each tested firing and quiet")


# ----------------------------------------------------------------- dashboard


def check_dashboard(prometheus_url):
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        fail("panel ids are not unique")
    cells = {}
    exprs = []
    for p in panels:
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            fail(f"panel {p['title']!r} is outside the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(f"panels {cells[(x, y)]!r} and {p['title']!r} overlap")
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        if not p.get("targets"):
            fail(f"panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            if 'node=~"$node"' not in t["expr"]:
                fail(f"panel {p['title']!r}: a query ignores the $node variable")
            exprs.append((p["title"], t["expr"]))
    # What the issue asks the dashboard to show, by the metric that shows it.
    wanted = {
        "throughput": "tailgate_spans_received_total",
        "decisions by policy": "tailgate_traces_decided_total",
        "drops by reason": "tailgate_exporter_spans_dropped_total",
        "buffer": "tailgate_buffer_bytes",
        "ring members": "tailgate_lb_members",
        "latency": "tailgate_decision_latency_seconds_bucket",
        "every policy's votes": "tailgate_policy_votes_total",
        "policy evaluation time": "tailgate_policy_evaluation_seconds_bucket",
        "why traces were decided": "tailgate_traces_decision_reason_total",
        "late span age": "tailgate_late_span_age_seconds_bucket",
    }
    for topic, metric in wanted.items():
        if not any(metric in e for _, e in exprs):
            fail(f"no panel shows {topic} ({metric})")
    for title, expr in exprs:
        query = expr.replace("$__rate_interval", "1m").replace("$node", ".*")
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                status = json.load(r)["status"]
        except urllib.error.HTTPError as e:
            status = json.load(e).get("error", e)
        if status != "success":
            fail(f"panel {title!r}: Prometheus refuses {query!r}: {status}")
    print(f"{len(panels)} panels, {len(exprs)} queries run on Prometheus")


# ---------------------------------------------------------------- Dockerfile


def check_dockerfile():
    """What hadolint cannot know: the binaries the build names exist in the
    workspace, the files it copies are in the build context, and the final
    stage runs as a non-root user."""
    import fnmatch
    import subprocess

    text = (ROOT / "Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    stages = [i for i in instructions if i.upper().startswith("FROM ")]
    if len(stages) < 2:
        fail("the Dockerfile is not multi-stage")
    final = instructions[instructions.index(stages[-1]):]

    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    bins = {t["name"]: p["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
    build = next((i for i in instructions if "cargo build" in i), "")
    named_bins = re.findall(r"--bin\s+(\S+)", build)
    named_packages = re.findall(r"(?:--package|-p)\s+(\S+)", build)
    for b in ("tailgate", "tailgate-loadtest"):
        if b not in named_bins:
            fail(f"the build does not name the binary {b}")
        if b not in bins:
            fail(f"no binary {b} in the workspace")
        elif bins[b] not in named_packages:
            fail(f"the build names binary {b} but not its package {bins[b]}")
        if not any(re.search(rf"/{re.escape(b)}(\s|$)", i) for i in final if i.startswith("COPY")):
            fail(f"the final stage does not copy {b}")
    if "--locked" not in build or "--release" not in build:
        fail("the build is not `cargo build --release --locked`")

    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for i in instructions:
        if not i.startswith("COPY ") or "--from=" in i:
            continue
        sources = [a for a in i.split()[1:-1] if not a.startswith("--")]
        for src in sources:
            if src == ".":
                continue
            if not (ROOT / src).exists():
                fail(f"COPY {src}: no such file in the build context")
            if any(fnmatch.fnmatch(src, p) or src.startswith(p.rstrip("/") + "/") for p in ignored):
                fail(f"COPY {src}: excluded by .dockerignore")
    for needed in ("Cargo.toml", "Cargo.lock", "src", "proto", "policy", "sampler", "lb-exporter", "loadtest"):
        if needed in ignored:
            fail(f".dockerignore excludes {needed}, which the build needs")

    users = [i.split()[1] for i in final if i.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("the final stage does not switch to a non-root USER")
    print(f"{len(stages)} stages; binaries {', '.join(named_bins)}; runs as {users[-1] if users else '?'}")


def write_scrape_config(out):
    """scrape.yaml with its Kubernetes SD swapped for a static target: Debian's
    promtool has no Kubernetes SD, but the relabelling is checked all the same."""
    config = yaml.safe_load(SCRAPE.read_text())
    for job in config["scrape_configs"]:
        if "kubernetes_sd_configs" not in job:
            fail(f"scrape job {job['job_name']} has no kubernetes_sd_configs")
        job.pop("kubernetes_sd_configs", None)
        job["static_configs"] = [{"targets": ["127.0.0.1:8888"]}]
        if not job["job_name"].startswith("tailgate"):
            fail(f"scrape job {job['job_name']}: TailgateNodeDown watches jobs named tailgate*")
    config["rule_files"] = [str(ALERTS)]
    Path(out).write_text(yaml.safe_dump(config))


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "kubernetes":
        check_kubernetes(sys.argv[2], sys.argv[3])
    elif what == "metrics":
        check_metrics()
    elif what == "alert-tests":
        check_alert_tests()
    elif what == "dashboard":
        check_dashboard(sys.argv[2])
    elif what == "dockerfile":
        check_dockerfile()
    elif what == "scrape-config":
        write_scrape_config(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
    finish(" ".join(sys.argv[1:2] + [Path(a).name for a in sys.argv[2:]]))


if __name__ == "__main__":
    main()
