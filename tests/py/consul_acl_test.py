#!/usr/bin/env python3
"""Drives `meshd dev --acl` with py-consul's ACL API, unmodified (issue 12 acceptance 5).

Usage: consul_acl_test.py HOST:PORT

Bootstraps ACLs, creates a policy (py-consul sends its body with lower-case keys and the rules
as a JSON document) and a token linking it, then uses that token the way an application would:
it may register and get the leaf of `web`, and is refused `db`; a deleted token stops working
within a second. One line per step; on the first failure: the step, the error, a traceback,
exit 1.
"""

from __future__ import annotations

import time

import consul
from consul.exceptions import ACLPermissionDenied

# The step runner and assertion of the client script next to this one (same directory).
from consul_client_test import Steps, expect, parse_address


def refused(what: str, f) -> str:
    """Runs `f`, which must raise py-consul's ACLPermissionDenied (HTTP 403); its message."""
    try:
        out = f()
    except ACLPermissionDenied as e:
        return str(e)
    raise AssertionError(f"{what} was allowed: {out!r}")


def main() -> None:
    host, port = parse_address("consul_acl_test.py")
    anon = consul.Consul(host=host, port=port)
    step = Steps().run

    print(f"py-consul {getattr(consul, '__version__', '?')} against {host}:{port}", flush=True)

    def bootstrap():
        t = anon.acl.bootstrap()
        expect(len(t["SecretID"]) == 36, "bootstrap SecretID is a UUID", t)
        expect(t["Policies"][0]["Name"] == "global-management", "bootstrap policy", t["Policies"])
        return t["SecretID"]

    root = step("acl.bootstrap", bootstrap)
    step("a second acl.bootstrap is refused", lambda: refused("second bootstrap", anon.acl.bootstrap))
    admin = consul.Consul(host=host, port=port, token=root)

    def create_policy():
        rules = {
            "service": {"web": {"policy": "write"}},
            "service_prefix": {"": {"policy": "read"}},
            "node_prefix": {"": {"policy": "read"}},
        }
        p = admin.acl.policy.create("web-writer", rules=rules, description="web only")
        expect(p["Name"] == "web-writer", "policy Name", p)
        expect(len(p["ID"]) == 36, "policy ID", p)
        return p["ID"]

    policy_id = step("acl.policy.create (lower-case keys, JSON rules)", create_policy)

    def create_token():
        t = admin.acl.token.create(policies_id=[policy_id], description="web app")
        expect(t["Policies"][0]["ID"] == policy_id, "token links the policy", t)
        return t["AccessorID"], t["SecretID"]

    accessor, secret = step("acl.token.create linking the policy", create_token)
    web = consul.Consul(host=host, port=port, token=secret)

    def read_self():
        me = web.acl.token.read_self()
        expect(me["AccessorID"] == accessor, "token/self is the new token", me)

    step("acl.token.read_self with the new token", read_self)
    step(
        "the new token may not list tokens (acl:read)",
        lambda: refused("token list", web.acl.token.list),
    )

    def register_web():
        expect(web.agent.service.register("web", service_id="web-1", port=8080) is True, "register web")

    step("agent.service.register web with the token", register_web)

    def register_db():
        msg = refused("register db", lambda: web.agent.service.register("db", port=8081))
        expect("service:write" in msg and '"db"' in msg, "Consul's denial text", msg)

    step("agent.service.register db is refused", register_db)

    def leaves():
        leaf = web.agent.connect.ca.leaf("web")
        expect(leaf["Service"] == "web", "leaf Service", leaf.get("Service"))
        expect("PRIVATE KEY" in leaf["PrivateKeyPEM"], "leaf key", None)
        refused("db's leaf", lambda: web.agent.connect.ca.leaf("db"))
        refused("anonymous web leaf", lambda: anon.agent.connect.ca.leaf("web"))

    step("agent.connect.leaf: web yes, db no, anonymous no", leaves)

    def revoke():
        expect(admin.acl.token.delete(accessor) is True, "token delete")
        deadline = time.monotonic() + 1.0
        while True:
            try:
                web.agent.connect.ca.leaf("web")
            except ACLPermissionDenied:
                return
            if time.monotonic() >= deadline:
                raise AssertionError("the deleted token still works after 1 s")
            time.sleep(0.05)

    step("acl.token.delete: the token stops working within 1 s", revoke)
    print("all ACL steps passed", flush=True)


if __name__ == "__main__":
    main()
