#!/usr/bin/env python3
"""Drives the catalog, health and agent read endpoints of issue 15 with py-consul, unmodified.

Usage: consul_reads_test.py HOST:PORT health|catalog|agent

One family per run (the Rust test module of that family starts its own `meshd dev`): each step
calls py-consul's own methods and checks the answer as a Consul user would; one line is printed
per step, and the first failure exits 1 with a traceback.
"""

from __future__ import annotations

import sys
import threading
import time

import consul

from consul_client_test import Steps, eventually, expect


def check_ids(checks) -> list[str]:
    return sorted(ch["CheckID"] for ch in checks)


def health(c: consul.Consul, node: str, s: Steps) -> None:
    def register():
        ok = c.agent.service.register("web", service_id="web-1", port=8080, check=consul.Check.ttl("60s"))
        expect(ok is True, "register web-1 with a TTL check")
        expect(c.agent.check.ttl_pass("service:web-1") is True, "ttl_pass")

    s.run("agent.service.register web-1 with a passing TTL check", register)

    def checks_of_service():
        def found():
            _, checks = c.health.checks("web")
            return checks if [ch["Status"] for ch in checks] == ["passing"] else None

        checks = eventually("health.checks('web') to show the passing check", 10, found)
        expect(checks[0]["ServiceName"] == "web", "the check is web's", checks)
        expect(checks[0]["Node"] == node, "on this node", checks)
        _, none = c.health.checks("no-such-service")
        expect(none == [], "no checks for an unknown service", none)

    s.run("health.checks lists a service's checks", checks_of_service)

    def node_checks():
        _, checks = c.health.node(node)
        ids = check_ids(checks)
        expect("serfHealth" in ids and "service:web-1" in ids, "node and service checks", ids)
        _, none = c.health.node("no-such-node")
        expect(none == [], "no checks for an unknown node", none)

    s.run("health.node lists the node's own and its services' checks", node_checks)

    def by_state():
        expect(c.agent.check.ttl_warn("service:web-1") is True, "ttl_warn")

        def warned():
            _, checks = c.health.state("warning")
            return "service:web-1" in check_ids(checks)

        eventually("the check in health.state('warning')", 10, warned)
        _, passing = c.health.state("passing")
        expect("service:web-1" not in check_ids(passing), "not among the passing", passing)
        expect("serfHealth" in check_ids(passing), "the node check passes", passing)
        _, every = c.health.state("any")
        expect({"serfHealth", "service:web-1"} <= set(check_ids(every)), "any: all", every)

    s.run("health.state filters by state; any lists them all", by_state)

    def blocking_wakes():
        index, _ = c.health.checks("web")
        out = {}

        def block():
            t0 = time.monotonic()
            out["answer"] = c.health.checks("web", index=index, wait="30s")
            out["took"] = time.monotonic() - t0

        t = threading.Thread(target=block)
        t.start()
        expect(c.agent.check.ttl_fail("service:web-1") is True, "ttl_fail")
        t.join(25)
        expect(not t.is_alive(), "the blocking query returned before its 30s wait")
        new_index, checks = out["answer"]
        expect(new_index > index, "with a later index", (index, new_index))
        expect([ch["Status"] for ch in checks] == ["critical"], "showing the change", checks)
        print(f"     woken after {out['took']:.2f}s, index {index} -> {new_index}", flush=True)

    s.run("a blocking health.checks query wakes on the check's change", blocking_wakes)


def catalog(c: consul.Consul, node: str, dc: str, s: Steps) -> None:
    def datacenters():
        expect(c.catalog.datacenters() == [dc], "our one datacenter", c.catalog.datacenters())

    s.run("catalog.datacenters", datacenters)

    def node_services():
        ok = c.agent.service.register("api", service_id="api-1", port=9090, tags=["v1"], meta={"env": "test"})
        expect(ok is True, "register api-1")

        def found():
            _, n = c.catalog.node(node)
            return n if n and "api-1" in n["Services"] else None

        n = eventually("api-1 in catalog.node", 10, found)
        expect(n["Node"]["Node"] == node, "the node itself", n["Node"])
        api = n["Services"]["api-1"]
        expect((api["Service"], api["Port"], api["Tags"], api["Meta"]) == ("api", 9090, ["v1"], {"env": "test"}),
               "the service as registered", api)
        expect(api["ModifyIndex"] > 0, "with its catalog index", api)
        _, unknown = c.catalog.node("no-such-node")
        expect(unknown is None, "an unknown node is null", unknown)

    s.run("catalog.node maps a node's services by ID", node_services)


def agent(c: consul.Consul, node: str, s: Steps) -> None:
    def register():
        expect(c.agent.service.register("db", service_id="db-1", port=5432) is True, "register db-1")
        eventually("db-1 passing in health.service", 10,
                   lambda: len(c.health.service("db", passing=True)[1]) == 1)

    s.run("agent.service.register db-1", register)

    def service_maint():
        expect(c.agent.service.maintenance("db-1", True, reason="upgrade") is True, "enable")
        mine = c.agent.checks().get("_service_maintenance:db-1")
        expect(mine is not None and mine["Status"] == "critical" and mine["Notes"] == "upgrade",
               "a critical maintenance check with the reason", mine)
        eventually("db-1 out of the passing instances", 10,
                   lambda: c.health.service("db", passing=True)[1] == [])
        eventually("the maintenance check in health.checks('db')", 10,
                   lambda: "_service_maintenance:db-1" in check_ids(c.health.checks("db")[1]))
        expect(c.agent.service.maintenance("db-1", False) is True, "disable")
        expect("_service_maintenance:db-1" not in c.agent.checks(), "check gone from the agent")
        eventually("the maintenance check gone from the catalog", 10,
                   lambda: "_service_maintenance:db-1" not in check_ids(c.health.checks("db")[1]))
        eventually("db-1 passing again", 10, lambda: len(c.health.service("db", passing=True)[1]) == 1)

    s.run("agent.service.maintenance on and off", service_maint)

    def node_maint():
        expect(c.agent.maintenance(True) is True, "enable")
        eventually("_node_maintenance in health.node", 10,
                   lambda: "_node_maintenance" in check_ids(c.health.node(node)[1]))
        notes = c.agent.checks()["_node_maintenance"]["Notes"]
        expect(notes.startswith("Maintenance mode is enabled for this node"), "Consul's default reason", notes)
        expect(c.agent.maintenance(False) is True, "disable")
        eventually("_node_maintenance gone from health.node", 10,
                   lambda: "_node_maintenance" not in check_ids(c.health.node(node)[1]))

    s.run("agent.maintenance on and off", node_maint)

    def self_and_members():
        me = c.agent.self()
        expect(me["Config"]["NodeName"] == node and me["Member"]["Name"] == node, "self", me)
        names = [m["Name"] for m in c.agent.members()]
        expect(node in names, "this node among the members", names)

    s.run("agent.self and agent.members", self_and_members)


def main() -> None:
    families = ("health", "catalog", "agent")
    if len(sys.argv) != 3 or ":" not in sys.argv[1] or sys.argv[2] not in families:
        print(f"usage: consul_reads_test.py HOST:PORT {'|'.join(families)}", file=sys.stderr)
        sys.exit(2)
    host, port = sys.argv[1].rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    me = c.agent.self()["Config"]
    node, dc = me["NodeName"], me["Datacenter"]
    s = Steps()
    family = sys.argv[2]
    if family == "health":
        health(c, node, s)
    elif family == "catalog":
        catalog(c, node, dc, s)
    else:
        agent(c, node, s)
    print(f"all {s.n} {family} steps passed", flush=True)


if __name__ == "__main__":
    main()
