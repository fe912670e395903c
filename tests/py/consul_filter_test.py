#!/usr/bin/env python3
"""Drives `meshd dev`'s list filters with py-consul, a third-party Consul client, unmodified:
`tag` (repeatable), `node_meta` and `filter_expr` on the catalog, health and agent lists.

Usage: consul_filter_test.py HOST:PORT

One line is printed per step; on the first failure it prints the step, the error and a
traceback, and exits 1.
"""

from __future__ import annotations

import json

import consul
from consul.callback import CB
from consul_client_test import Steps, eventually, expect, parse_address


def ids(rows, key: str) -> set[str]:
    return {r[key] for r in rows}


def main() -> None:
    host, port = parse_address("consul_filter_test.py")
    c = consul.Consul(host=host, port=port)
    s = Steps()

    def register() -> None:
        c.agent.service.register(
            "web", service_id="web-1", port=8080, tags=["v1"], meta={"env": "prod"},
            check=consul.Check.ttl("300s"),
        )
        c.agent.service.register(
            "web", service_id="web-2", port=8081, tags=["v2", "Canary"], meta={"env": "staging"},
        )
        # py-consul's catalog.register sends `node_meta` as query parameters, which Consul
        # ignores on a registration; the body's NodeMeta goes through its generic request.
        body = {
            "Node": "ext-node", "Address": "127.0.0.9", "NodeMeta": {"rack": "r2"},
            "Service": {"Service": "web", "ID": "web-ext", "Port": 9090, "Tags": ["v2"]},
        }
        ok = c.http.put(CB.boolean(), "/v1/catalog/register", data=json.dumps(body))
        expect(ok is True, "catalog register of ext-node", ok)

    s.run("register web-1 (v1, prod, TTL check), web-2 (v2, Canary) and web-ext on ext-node", register)
    s.run(
        "catalog.service('web') lists all three once the agent has synced",
        lambda: eventually(
            "three web instances in the catalog", 10,
            lambda: ids(c.catalog.service("web")[1], "ServiceID") == {"web-1", "web-2", "web-ext"},
        ),
    )

    def catalog_tag() -> None:
        got = ids(c.catalog.service("web", tag="v2")[1], "ServiceID")
        expect(got == {"web-2", "web-ext"}, "tag=v2 keeps the instances tagged v2", got)
        got = c.catalog.service("web", tag="nope")[1]
        expect(got == [], "tag=nope keeps nothing", got)
        got = ids(c.catalog.service("web", tag="canary")[1], "ServiceID")
        expect(got == {"web-2"}, "tags compare case-insensitively, as Consul", got)

    s.run("catalog.service(tag=...)", catalog_tag)

    def health_tags() -> None:
        got = ids([r["Service"] for r in c.health.service("web", tag=["v2", "canary"])[1]], "ID")
        expect(got == {"web-2"}, "two tags: an instance must carry both", got)
        got = ids([r["Service"] for r in c.health.service("web", tag="v1")[1]], "ID")
        expect(got == {"web-1"}, "tag=v1", got)

    s.run("health.service(tag=[...]) keeps instances with every tag", health_tags)

    def filters() -> None:
        rows = c.health.service("web", filter_expr='Service.Meta.env == "prod"')[1]
        expect(ids([r["Service"] for r in rows], "ID") == {"web-1"}, "Service.Meta.env", rows)
        rows = c.health.service("web", filter_expr="Checks.Status == critical")[1]
        expect(ids([r["Service"] for r in rows], "ID") == {"web-1"}, "Checks.Status (any check)", rows)
        rows = c.catalog.service("web", filter_expr='ServicePort == 8081 or NodeMeta.rack == "r2"')[1]
        expect(ids(rows, "ServiceID") == {"web-2", "web-ext"}, "or over two fields", rows)
        rows = c.catalog.service("web", filter_expr='not ("v2" in ServiceTags) and ServiceID matches "^web-[0-9]$"')[1]
        expect(ids(rows, "ServiceID") == {"web-1"}, "not / in / matches", rows)
        nodes = c.catalog.nodes(node_meta={"rack": "r2"})[1]
        expect([n["Node"] for n in nodes] == ["ext-node"], "catalog.nodes(node_meta)", nodes)
        nodes = c.catalog.nodes(filter_expr='Meta.rack == "r2"')[1]
        expect([n["Node"] for n in nodes] == ["ext-node"], "catalog.nodes(filter_expr)", nodes)
        services = c.catalog.services(filter_expr='ServiceTags contains "Canary"')[1]
        expect(list(services) == ["web"], "catalog.services(filter_expr)", services)
        services = c.catalog.services(filter_expr='ServiceName == "nothing"')[1]
        expect(services == {}, "catalog.services with nothing matching", services)
        services = c.agent.services(filter_expr='"v1" in Tags')
        expect(list(services) == ["web-1"], "agent.services(filter_expr)", services)
        checks = c.agent.checks(filter_expr='ServiceID == "web-1" and Status == critical')
        expect(len(checks) == 1, "agent.checks(filter_expr)", checks)

    s.run("filter_expr on health, catalog and agent lists", filters)

    def bad_filter() -> None:
        try:
            c.health.service("web", filter_expr="Service.Port ==")
        except consul.ConsulException as e:
            text = str(e)
            expect(text.startswith("400"), "a bad filter is a 400", text)
            expect("Failed to create boolean expression evaluator: 1:16 (15)" in text, "with its position", text)
            return
        raise AssertionError("a bad filter was accepted")

    s.run("a bad filter_expr raises BadRequest with the position", bad_filter)


if __name__ == "__main__":
    main()
