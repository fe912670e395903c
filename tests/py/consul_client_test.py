#!/usr/bin/env python3
"""Drives `meshd dev` with py-consul, a third-party Consul client, unmodified.

Usage: consul_client_test.py HOST:PORT

Every step calls py-consul's own methods (no raw HTTP) and checks the answer the way a
Consul user would; one line is printed per step. On the first failure it prints the step,
the error and a traceback, and exits 1.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback

import consul

SIDECAR_PORT = 21500
SIDECAR_PORT_2 = 21501


def eventually(what: str, timeout: float, f):
    """Polls `f` every 50 ms until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = f()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.05)


def expect(cond: bool, msg: str, got=None):
    if not cond:
        raise AssertionError(f"{msg}; got {got!r}" if got is not None else msg)


class Steps:
    def __init__(self) -> None:
        self.n = 0

    def run(self, name: str, f):
        self.n += 1
        t0 = time.monotonic()
        try:
            out = f()
        except Exception as e:  # noqa: BLE001 -- report any failure of the step
            print(f"FAIL {self.n:2} {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.exit(1)
        print(f"ok   {self.n:2} {name} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
        return out


def sidecar_registration(port: int) -> dict:
    return {
        "SidecarService": {
            "Port": port,
            "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]},
        }
    }


def parse_address(script: str) -> tuple[str, int]:
    """HOST:PORT from the command line; else the usage line and exit 2."""
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        print(f"usage: {script} HOST:PORT", file=sys.stderr)
        sys.exit(2)
    host, port = sys.argv[1].rsplit(":", 1)
    return host, int(port)


def main() -> None:
    host, port = parse_address("consul_client_test.py")
    c = consul.Consul(host=host, port=port)
    s = Steps()
    print(f"py-consul {getattr(consul, '__version__', '?')} against {host}:{port}", flush=True)

    # --- Agent and service registration with a connect sidecar -------------------------
    def agent_self():
        me = c.agent.self()
        expect(me["Config"]["Datacenter"] == "dc1", "agent datacenter", me["Config"])
        return me["Config"]["NodeName"]

    node = s.run("agent.self", agent_self)

    def register_web():
        ok = c.agent.service.register(
            "web", service_id="web-1", port=8080, tags=["v1"], connect=sidecar_registration(SIDECAR_PORT)
        )
        expect(ok is True, "agent.service.register returns True", ok)

    s.run("agent.service.register web with Connect.SidecarService", register_web)

    def agent_services():
        svcs = c.agent.services()
        expect("web-1" in svcs, "web-1 in agent services", sorted(svcs))
        sidecar = svcs.get("web-1-sidecar-proxy")
        expect(sidecar is not None, "web-1-sidecar-proxy in agent services", sorted(svcs))
        expect(sidecar["Kind"] == "connect-proxy", "sidecar Kind", sidecar)
        expect(sidecar["Service"] == "web-sidecar-proxy", "sidecar Service name", sidecar)
        expect(sidecar["Port"] == SIDECAR_PORT, "sidecar Port", sidecar)
        proxy = sidecar["Proxy"]
        expect(proxy["DestinationServiceName"] == "web", "Proxy.DestinationServiceName", proxy)
        expect(proxy["DestinationServiceID"] == "web-1", "Proxy.DestinationServiceID", proxy)
        expect(proxy["LocalServicePort"] == 8080, "Proxy.LocalServicePort", proxy)
        ups = proxy["Upstreams"]
        expect(
            len(ups) == 1 and ups[0]["DestinationName"] == "db" and ups[0]["LocalBindPort"] == 9191,
            "Proxy.Upstreams",
            ups,
        )
        d = c.agent.service_definition("web-1-sidecar-proxy")
        expect(d["ID"] == "web-1-sidecar-proxy", "agent.service_definition ID", d)

    s.run("agent.services / agent.service_definition show the sidecar", agent_services)

    def health_connect_sees_sidecar():
        def look():
            index, nodes = c.health.connect("web")
            expect(int(index) > 0, "X-Consul-Index > 0", index)
            return [n for n in nodes if n["Service"]["ID"] == "web-1-sidecar-proxy"]

        [entry] = eventually("web-1-sidecar-proxy in health.connect('web')", 10, look)
        expect(entry["Node"]["Node"] == node, "health.connect Node", entry["Node"])
        expect(entry["Service"]["Port"] == SIDECAR_PORT, "health.connect Service.Port", entry["Service"])
        expect(entry["Service"]["Proxy"]["DestinationServiceName"] == "web", "Service.Proxy", entry["Service"])

    s.run("health.connect('web') lists the sidecar", health_connect_sees_sidecar)

    # --- CA roots and a leaf -------------------------------------------------------------
    def roots():
        agent_roots = c.agent.connect.ca.roots()
        server_roots = c.connect.ca.roots()
        for name, r in (("agent.connect.ca.roots", agent_roots), ("connect.ca.roots", server_roots)):
            expect(r["TrustDomain"].endswith(".consul"), f"{name} TrustDomain", r.get("TrustDomain"))
            active = [x for x in r["Roots"] if x["ID"] == r["ActiveRootID"]]
            expect(len(active) == 1, f"{name}: ActiveRootID names one root", r)
            expect(active[0]["Active"] is True, f"{name}: active root marked Active", active[0])
            expect("-----BEGIN CERTIFICATE-----" in active[0]["RootCert"], f"{name}: RootCert PEM", active[0])
        expect(agent_roots["ActiveRootID"] == server_roots["ActiveRootID"], "agent and server agree on the root")
        expect(agent_roots["TrustDomain"] == server_roots["TrustDomain"], "agent and server agree on trust domain")
        return agent_roots["TrustDomain"]

    trust_domain = s.run("agent.connect.ca.roots / connect.ca.roots", roots)

    def leaf():
        cert = c.agent.connect.ca.leaf("web")
        expect("-----BEGIN CERTIFICATE-----" in cert["CertPEM"], "leaf CertPEM", cert.get("CertPEM"))
        expect("PRIVATE KEY-----" in cert["PrivateKeyPEM"], "leaf PrivateKeyPEM present")
        expect(cert["Service"] == "web", "leaf Service", cert.get("Service"))
        uri = cert["ServiceURI"]
        expect(uri.endswith("/svc/web"), "leaf ServiceURI ends with /svc/web", uri)
        expect(uri.startswith(f"spiffe://{trust_domain}/"), "leaf ServiceURI in the trust domain", uri)
        expect(bool(cert["SerialNumber"]), "leaf SerialNumber", cert.get("SerialNumber"))
        return uri, cert["SerialNumber"]

    web_uri, web_serial = s.run("agent.connect.ca.leaf('web')", leaf)

    # --- Intentions ------------------------------------------------------------------------
    def default_deny():
        allowed = c.connect.intentions.check("web", "db")
        expect(allowed is False, "check web -> db with no intention (default deny)", allowed)

    s.run("connect.intentions.check web->db before any intention: denied", default_deny)

    def upsert():
        ok = c.connect.intentions.upsert("web", "db", action="allow", description="py-consul", meta={"by": "test"})
        expect(ok is True, "upsert web -> db allow", ok)
        ok = c.connect.intentions.upsert("*", "db", action="deny")
        expect(ok is True, "upsert * -> db deny", ok)
        # An upsert of an existing pair replaces it.
        ok = c.connect.intentions.upsert("web", "db", action="allow", description="py-consul again")
        expect(ok is True, "second upsert web -> db", ok)

    s.run("connect.intentions.upsert web->db allow, *->db deny", upsert)

    def read():
        i = c.connect.intentions.read("web", "db")
        expect(i is not None, "read web -> db found")
        expect(i["SourceName"] == "web" and i["DestinationName"] == "db", "read names", i)
        expect(i["Action"] == "allow", "read Action", i)
        expect(i["Description"] == "py-consul again", "read Description after replace", i)
        missing = c.connect.intentions.read("nobody", "db")
        expect(missing is None, "read of a missing intention is None (404)", missing)

    s.run("connect.intentions.read", read)

    def list_():
        all_ = c.connect.intentions.list()
        pairs = [(i["SourceName"], i["DestinationName"], i["Action"]) for i in all_]
        expect(("web", "db", "allow") in pairs, "list has web -> db allow", pairs)
        expect(("*", "db", "deny") in pairs, "list has * -> db deny", pairs)
        # Consul lists by precedence: the exact source before the wildcard.
        expect(pairs.index(("web", "db", "allow")) < pairs.index(("*", "db", "deny")), "list order", pairs)

    s.run("connect.intentions.list", list_)

    def check():
        expect(c.connect.intentions.check("web", "db") is True, "check web -> db allowed")
        expect(c.connect.intentions.check("api", "db") is False, "check api -> db denied by * -> db")

    s.run("connect.intentions.check web->db allowed, api->db denied", check)

    def match():
        by_dst = c.connect.intentions.match("destination", "db")
        expect(list(by_dst) == ["db"], "match by destination keys", by_dst)
        srcs = [i["SourceName"] for i in by_dst["db"]]
        expect(srcs == ["web", "*"], "match by destination db, in precedence order", srcs)
        by_src = c.connect.intentions.match("source", "web")
        dsts = [(i["SourceName"], i["DestinationName"]) for i in by_src["web"]]
        expect(("web", "db") in dsts, "match by source web includes web -> db", dsts)

    s.run("connect.intentions.match by destination and by source", match)

    # --- Authorize ------------------------------------------------------------------------
    def authorize():
        r = c.agent.connect.authorize("db", web_uri, web_serial)
        expect(r["Authorized"] is True, "authorize web -> db with an allow intention", r)
        api_uri = web_uri.rsplit("/svc/", 1)[0] + "/svc/api"
        r = c.agent.connect.authorize("db", api_uri, "01")
        expect(r["Authorized"] is False, "authorize api -> db (deny intention)", r)
        expect(bool(r.get("Reason")), "denial has a Reason", r)
        r = c.agent.connect.authorize("other", web_uri, web_serial)
        expect(r["Authorized"] is False, "authorize web -> other (no intention, default deny)", r)
        expect(bool(r.get("Reason")), "default-deny denial has a Reason", r)
        foreign = "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"
        r = c.agent.connect.authorize("db", foreign, web_serial)
        expect(r["Authorized"] is False, "authorize from a foreign trust domain refused", r)
        expect(bool(r.get("Reason")), "foreign trust domain denial has a Reason", r)

    s.run("agent.connect.authorize: allowed, denied, default deny, foreign trust domain", authorize)

    def delete():
        expect(c.connect.intentions.delete("web", "db") is True, "delete web -> db")
        expect(c.connect.intentions.read("web", "db") is None, "read after delete is None")
        pairs = [(i["SourceName"], i["DestinationName"]) for i in c.connect.intentions.list()]
        expect(("web", "db") not in pairs, "list after delete", pairs)
        expect(c.connect.intentions.check("web", "db") is False, "check web -> db after delete")
        # The agent's cached view follows the delete (bounded wait: it is fed by a watch).
        eventually(
            "authorize web -> db to be denied after the delete",
            10,
            lambda: c.agent.connect.authorize("db", web_uri, web_serial)["Authorized"] is False,
        )
        expect(c.connect.intentions.delete("*", "db") is True, "delete * -> db")

    s.run("connect.intentions.delete (then read/list/check/authorize see it gone)", delete)

    # --- Blocking queries -----------------------------------------------------------------
    # Our index (like Consul's) may also move for writes the test does not make: the agent
    # pushes a sidecar's TCP check output to the catalog after its first probe, which runs at
    # a random point of its 10 s interval. A blocking query may return early only with a
    # larger index; one that returns early with the same index is a bug.
    def blocking_wakes_on_change():
        for attempt in range(1, 6):
            index, nodes = c.health.connect("web")
            expect(len(nodes) == 1, "one web sidecar before the change", nodes)
            result: dict = {}

            def block():
                try:
                    result["value"] = c.health.connect("web", index=index, wait="30s")
                except Exception as e:  # noqa: BLE001 -- reported by the main thread
                    result["error"] = e

            t = threading.Thread(target=block, daemon=True)
            t.start()
            t.join(0.5)
            if t.is_alive():
                break
            # Woken by a write we did not make: legitimate only with a larger index.
            expect("error" not in result, "blocking health.connect failed", result.get("error"))
            early_index, _ = result["value"]
            expect(int(early_index) > int(index), "early return from a blocking query with the same index",
                   (index, early_index))
            print(f"     (attempt {attempt}: woken by an unrelated write, index {index} -> {early_index})",
                  flush=True)
        else:
            raise AssertionError("every blocking health.connect returned within 0.5 s, before any change")
        changed_at = time.monotonic()
        ok = c.agent.service.register(
            "web", service_id="web-2", port=8081, connect=sidecar_registration(SIDECAR_PORT_2)
        )
        expect(ok is True, "register web-2")
        t.join(5)
        expect(not t.is_alive(), "blocking health.connect did not return within 5 s of the change")
        expect("error" not in result, "blocking health.connect failed", result.get("error"))
        new_index, _ = result["value"]
        expect(int(new_index) > int(index), f"index grew past {index}", new_index)
        print(f"     blocking query returned {time.monotonic() - changed_at:.2f}s after the change, "
              f"index {index} -> {new_index}", flush=True)

        def both():
            _, nodes = c.health.connect("web")
            return sorted(n["Service"]["ID"] for n in nodes) == ["web-1-sidecar-proxy", "web-2-sidecar-proxy"]

        eventually("both web sidecars in health.connect('web')", 10, both)

    s.run("blocking health.connect wakes promptly on a registration change", blocking_wakes_on_change)

    def blocking_times_out():
        for attempt in range(1, 6):
            index, _ = c.health.connect("web")
            t0 = time.monotonic()
            new_index, nodes = c.health.connect("web", index=index, wait="1s")
            took = time.monotonic() - t0
            expect(took < 10, "a blocking query with wait=1s returns near its deadline", took)
            if new_index != index:
                # Woken by a write we did not make (see above): only ever with a larger index.
                expect(int(new_index) > int(index), "index went backwards", (index, new_index))
                print(f"     (attempt {attempt}: woken after {took:.2f}s by an unrelated write, "
                      f"index {index} -> {new_index})", flush=True)
                continue
            expect(took >= 1.0, f"returned after {took:.2f}s, before its 1s wait, with the same index", index)
            expect(len(nodes) == 2, "same result at the deadline", nodes)
            print(f"     returned after {took:.2f}s with index {new_index} unchanged", flush=True)
            return
        raise AssertionError("the index moved during every one of 5 one-second blocking queries")

    s.run("blocking health.connect with no change returns at its deadline", blocking_times_out)

    def deregister():
        expect(c.agent.service.deregister("web-2") is True, "deregister web-2")
        svcs = c.agent.services()
        expect("web-2" not in svcs, "web-2 gone from agent services", sorted(svcs))
        expect("web-2-sidecar-proxy" not in svcs, "its sidecar is deregistered with it", sorted(svcs))

        def one():
            _, nodes = c.health.connect("web")
            return [n["Service"]["ID"] for n in nodes] == ["web-1-sidecar-proxy"]

        eventually("web-2's sidecar gone from health.connect('web')", 10, one)

    s.run("agent.service.deregister removes the service and its sidecar", deregister)

    print(f"all {s.n} steps passed", flush=True)


if __name__ == "__main__":
    main()
