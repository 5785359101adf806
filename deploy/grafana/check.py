#!/usr/bin/env python3
"""Checks deploy/grafana/holdfast.json against a live server (.ci/run).

    check.py DASHBOARD METRICS RULES_OUT

Writes every PromQL expression of the dashboard as a recording rule to
RULES_OUT, for `promtool check rules` to parse, and fails unless every
metric family the expressions name appears in METRICS (a live server's
/metrics, with its `# TYPE` lines).
"""
import json
import re
import sys

dashboard, metrics, out = sys.argv[1:4]
with open(dashboard) as f:
    dash = json.load(f)
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
# Dashboard variables stand for label values; any regex will do to parse.
promql = [e.replace("$instance", ".*") for e in exprs if not e.startswith("label_values(")]
rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(promql)]}]}
with open(out, "w") as f:
    json.dump(rules, f, indent=1)  # JSON is YAML

with open(metrics) as f:
    exported = {l.split()[2] for l in f if l.startswith("# TYPE ")}
named = set()
for e in exprs:
    for name in re.findall(r"\b((?:holdfast|process)_[a-z0-9_]+)\b", e):
        named.add(re.sub(r"_(bucket|sum|count)$", "", name))
missing = sorted(named - exported)
if missing:
    sys.exit(f"{dashboard} names metric families the server does not export: {', '.join(missing)}")
print(f"{len(promql)} expressions, {len(named)} metric families, all exported")
