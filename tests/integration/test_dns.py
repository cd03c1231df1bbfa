"""MX and host resolution (src/deliver/dns.c) against a real DNS server.

The lookups run in `dns-lookup`, a test driver built from src/deliver/test-dns.c (found via
DNS_LOOKUP_BIN, else <repo>/build/src/dns-lookup), which prints one JSON line per result.
The DNS server is unbound serving static zones (dnsserver.DNSServer).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dnsserver import DNSServer, dns_server, free_udp_tcp_port  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZER = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                       r"runtime error:")


def lookup_bin():
    path = os.environ.get("DNS_LOOKUP_BIN") or os.path.join(REPO, "build", "src", "dns-lookup")
    if not os.access(path, os.X_OK):
        pytest.skip(f"dns-lookup test driver not found at {path} (it is built with the "
                    "cmocka tests enabled; or set DNS_LOOKUP_BIN)")
    return path


def run(forwarder, *ops, port=25, timeout_ms=None, repeat=None, concurrent=False,
        proc_timeout=30):
    """Runs dns-lookup; ops are ("mx", name) / ("host", name). Returns the results."""
    args = [lookup_bin(), "--port", str(port)]
    if forwarder is not None:
        args += ["--forwarder", forwarder]
    if timeout_ms is not None:
        args += ["--timeout", str(timeout_ms)]
    if repeat is not None:
        args += ["--repeat", str(repeat)]
    if concurrent:
        args.append("--concurrent")
    for kind, name in ops:
        args += [f"--{kind}", name]
    p = subprocess.run(args, capture_output=True, text=True, timeout=proc_timeout)
    assert not SANITIZER.search(p.stderr), p.stderr
    results = [json.loads(line) for line in p.stdout.splitlines()]
    for r in results:
        assert r.get("sync_callback") is not True, f"callback ran inside the lookup call: {r}"
    return results, p


def one(server, kind, name, **kw):
    results, p = run(server.address, (kind, name), **kw)
    assert p.returncode == 0, p.stderr
    assert len(results) == 1, p.stdout
    return results[0]


def hosts(result):
    return [(h["name"], h["pref"], h["addrs"]) for h in result["hosts"]]


def test_mx_sorted_by_preference(dns_server):
    dns = dns_server([
        "example.test. MX 30 mx3.example.test.",
        "example.test. MX 10 mx1.example.test.",
        "example.test. MX 20 mx2.example.test.",
        "mx1.example.test. A 127.0.0.11",
        "mx2.example.test. A 127.0.0.12",
        "mx3.example.test. A 127.0.0.13",
    ])
    r = one(dns, "mx", "example.test", port=2525)
    assert r["status"] == "OK", r
    assert r["error"] == ""
    assert r["implicit_mx"] is False
    assert r["secure"] is False          # the forwarder's zones are not signed
    assert hosts(r) == [
        ("mx1.example.test", 10, ["127.0.0.11:2525"]),
        ("mx2.example.test", 20, ["127.0.0.12:2525"]),
        ("mx3.example.test", 30, ["127.0.0.13:2525"]),
    ]
    # A trailing dot and upper case name the same domain; names come back lower case.
    r = one(dns, "mx", "EXAMPLE.test.", port=2525)
    assert [h[0] for h in hosts(r)] == ["mx1.example.test", "mx2.example.test",
                                         "mx3.example.test"]


def test_equal_preferences_in_random_order(dns_server):
    dns = dns_server([
        "rr.test. MX 10 a.rr.test.",
        "rr.test. MX 10 b.rr.test.",
        "rr.test. MX 5 first.rr.test.",
        "rr.test. MX 20 last.rr.test.",
        "a.rr.test. A 127.0.0.1",
        "b.rr.test. A 127.0.0.2",
        "first.rr.test. A 127.0.0.3",
        "last.rr.test. A 127.0.0.4",
    ])
    # One process: after the first, the answers come from libunbound's cache
    # (callbacks inside ub_resolve_event), which must still reach us asynchronously.
    results, p = run(dns.address, ("mx", "rr.test"), repeat=30)
    assert p.returncode == 0, p.stderr
    assert len(results) == 30
    orders = set()
    for r in results:
        assert r["status"] == "OK", r
        names = [h[0] for h in hosts(r)]
        assert names[0] == "first.rr.test" and names[3] == "last.rr.test", names
        assert sorted(names[1:3]) == ["a.rr.test", "b.rr.test"], names
        orders.add(tuple(names[1:3]))
    # Each order has probability 1/2: both are missing from 30 draws with 2**-29.
    assert orders == {("a.rr.test", "b.rr.test"), ("b.rr.test", "a.rr.test")}


def test_implicit_mx(dns_server):
    dns = dns_server([
        "plain.test. A 127.0.0.7",
        "plain.test. AAAA ::1",
        "plain.test. TXT \"v=spf1 -all\"",
    ])
    r = one(dns, "mx", "plain.test")
    assert r["status"] == "OK", r
    assert r["implicit_mx"] is True
    assert hosts(r) == [("plain.test", 0, ["127.0.0.7:25", "[::1]:25"])]


def test_no_mx_and_no_address_is_permanent(dns_server):
    dns = dns_server(["txtonly.test. TXT \"nothing here\""])
    r = one(dns, "mx", "txtonly.test")
    assert r["status"] == "PERMFAIL", r
    assert r["hosts"] == []
    assert "txtonly.test" in r["error"] and "no MX" in r["error"]


def test_null_mx(dns_server):
    dns = dns_server([
        "nullmx.test. MX 0 .",
        "nullmx.test. A 127.0.0.5",     # an address does not make it implicit MX
        "mixed.test. MX 0 .",
        "mixed.test. MX 10 mx.mixed.test.",
        "mx.mixed.test. A 127.0.0.6",
    ])
    r = one(dns, "mx", "nullmx.test")
    assert r["status"] == "NULL_MX", r
    assert r["hosts"] == []
    assert "null MX" in r["error"]
    # RFC 7505 forbids "." beside other MX records; the real host is still used.
    r = one(dns, "mx", "mixed.test")
    assert r["status"] == "OK", r
    assert hosts(r) == [("mx.mixed.test", 10, ["127.0.0.6:25"])]


def test_nxdomain_is_permanent(dns_server):
    dns = dns_server(["exists.test. A 127.0.0.1"])
    r = one(dns, "mx", "does-not-exist.test")
    assert r["status"] == "PERMFAIL", r
    assert r["error"] == "NXDOMAIN for does-not-exist.test"
    assert r["hosts"] == []
    r = one(dns, "host", "does-not-exist.test")
    assert r["status"] == "PERMFAIL", r
    assert r["error"] == "NXDOMAIN for does-not-exist.test"


def test_mx_targets_without_address_are_dropped(dns_server):
    dns = dns_server([
        "partial.test. MX 10 gone.partial.test.",       # NXDOMAIN
        "partial.test. MX 20 txt.partial.test.",        # exists, no A/AAAA
        "partial.test. MX 30 good.partial.test.",
        "txt.partial.test. TXT \"no address\"",
        "good.partial.test. A 127.0.0.30",
        "none.test. MX 10 gone.none.test.",
        "none.test. MX 20 txt.partial.test.",
    ])
    r = one(dns, "mx", "partial.test")
    assert r["status"] == "OK", r
    assert hosts(r) == [("good.partial.test", 30, ["127.0.0.30:25"])]
    r = one(dns, "mx", "none.test")
    assert r["status"] == "PERMFAIL", r
    assert r["error"] == "MX hosts of none.test have no address"
    assert r["hosts"] == []


def test_mx_target_ip_literal(dns_server):
    dns = dns_server([
        "ip.test. MX 10 127.0.0.1.",
        "ip.test. MX 20 mx.ip.test.",
        "mx.ip.test. A 127.0.0.2",
    ])
    r = one(dns, "mx", "ip.test", port=2526)
    assert r["status"] == "OK", r
    assert hosts(r) == [("127.0.0.1", 10, ["127.0.0.1:2526"]),
                        ("mx.ip.test", 20, ["127.0.0.2:2526"])]


def test_aaaa(dns_server):
    dns = dns_server([
        "six.test. MX 10 v6only.six.test.",
        "six.test. MX 20 dual.six.test.",
        "v6only.six.test. AAAA ::1",
        "v6only.six.test. AAAA 2001:db8::25",
        "dual.six.test. AAAA 2001:db8::26",
        "dual.six.test. A 127.0.0.26",
    ])
    r = one(dns, "mx", "six.test")
    assert r["status"] == "OK", r
    got = hosts(r)
    assert got[0][0] == "v6only.six.test"
    assert sorted(got[0][2]) == sorted(["[::1]:25", "[2001:db8::25]:25"])
    # IPv4 first within a host.
    assert got[1] == ("dual.six.test", 20, ["127.0.0.26:25", "[2001:db8::26]:25"])


def test_cname_followed(dns_server):
    dns = dns_server([
        "cn.test. MX 10 alias.cn.test.",
        "alias.cn.test. CNAME real.cn.test.",
        "real.cn.test. A 127.0.0.40",
        "redirect.test. CNAME cn.test.",          # the domain itself is an alias
        "hop1.test. CNAME hop2.test.",
        "hop2.test. CNAME real.cn.test.",
    ])
    r = one(dns, "mx", "cn.test")
    assert r["status"] == "OK", r
    # The MX target's name is kept (for TLS checks), the address is the alias's end.
    assert hosts(r) == [("alias.cn.test", 10, ["127.0.0.40:25"])]
    r = one(dns, "mx", "redirect.test")
    assert r["status"] == "OK", r
    assert hosts(r) == [("alias.cn.test", 10, ["127.0.0.40:25"])]
    r = one(dns, "host", "hop1.test")
    assert r["status"] == "OK", r
    assert hosts(r) == [("hop1.test", 0, ["127.0.0.40:25"])]


def test_limits_and_duplicates(dns_server):
    records = [f"many.test. MX {pref} mx{pref}.many.test." for pref in range(1, 21)]
    records += [f"mx{pref}.many.test. A 127.0.1.{pref}" for pref in range(1, 21)]
    records += [f"wide.test. A 127.0.2.{i}" for i in range(1, 11)]
    records += ["wide.test. AAAA ::1"]
    records += ["dup.test. MX 20 same.dup.test.", "dup.test. MX 10 same.dup.test.",
                "same.dup.test. A 127.0.3.1"]
    dns = dns_server(records)
    r = one(dns, "mx", "many.test")
    assert r["status"] == "OK", r
    assert [h[1] for h in hosts(r)] == list(range(1, 17))      # DNS_HOSTS_MAX, the best
    r = one(dns, "host", "wide.test")
    addrs = r["hosts"][0]["addrs"]
    assert len(addrs) == 8                                      # DNS_ADDRS_MAX
    assert all(a.startswith("127.0.2.") for a in addrs)         # IPv4 first
    r = one(dns, "mx", "dup.test")
    assert hosts(r) == [("same.dup.test", 10, ["127.0.3.1:25"])]


def test_host_lookups(dns_server):
    dns = dns_server([
        "smarthost.test. A 127.0.0.50",
        "smarthost.test. AAAA ::1",
        "noaddr.test. MX 10 smarthost.test.",
    ])
    r = one(dns, "host", "smarthost.test", port=587)
    assert r["status"] == "OK", r
    assert r["implicit_mx"] is False
    assert hosts(r) == [("smarthost.test", 0, ["127.0.0.50:587", "[::1]:587"])]
    # A host lookup does not use MX records.
    r = one(dns, "host", "noaddr.test")
    assert r["status"] == "PERMFAIL", r
    assert r["hosts"] == []
    for literal, addr in [("127.0.0.1", "127.0.0.1:587"), ("::1", "[::1]:587"),
                          ("[::1]", "[::1]:587"), ("[127.0.0.1]", "127.0.0.1:587")]:
        r = one(dns, "host", literal, port=587)
        assert r["status"] == "OK", r
        assert hosts(r) == [(literal, 0, [addr])]
        assert r["secure"] is False


def test_ip_literal_needs_no_dns():
    # No server at all: a literal is parsed, never looked up.
    port = free_udp_tcp_port()
    results, p = run(f"127.0.0.1:{port}", ("host", "127.0.0.9"), ("host", "[::1]"),
                     timeout_ms=2000)
    assert p.returncode == 0, p.stderr
    assert [r["status"] for r in results] == ["OK", "OK"]
    assert all(r["elapsed_ms"] < 1000 for r in results), results


def test_invalid_names_refused_before_querying(dns_server):
    dns = dns_server(["ok.test. A 127.0.0.1"])
    bad = ["exa mple.test", "a..test", "", "semi;colon.test", "x" * 64 + ".test",
           ".".join(["abcdefghi"] * 26)]
    results, p = run(dns.address, *[("mx", b) for b in bad], ("host", "a/b.test"))
    assert p.returncode == 1
    assert [r["status"] for r in results] == ["ERROR"] * (len(bad) + 1), results
    assert all(r["error"] for r in results)


def test_concurrent_lookups(dns_server):
    records = []
    for i in range(10):
        records += [f"d{i}.test. MX 10 mx.d{i}.test.", f"mx.d{i}.test. A 127.0.4.{i}"]
    dns = dns_server(records)
    ops = [("mx", f"d{i}.test") for i in range(10)] + [("mx", "nx.test"),
                                                        ("host", "127.0.0.1")]
    results, p = run(dns.address, *ops, concurrent=True)
    assert p.returncode == 0, p.stderr
    by_name = {r["name"]: r for r in results}
    assert len(by_name) == 12
    for i in range(10):
        r = by_name[f"d{i}.test"]
        assert hosts(r) == [(f"mx.d{i}.test", 10, [f"127.0.4.{i}:25"])], r
    assert by_name["nx.test"]["status"] == "PERMFAIL"
    assert by_name["127.0.0.1"]["status"] == "OK"


def test_server_failure_is_tempfail(dns_server):
    # The server answers REFUSED for refused.test.: libunbound reports SERVFAIL.
    dns = dns_server([
        "partly.test. MX 10 mx.refused.test.",
        "partly.test. MX 20 mx.partly.test.",
        "mx.partly.test. A 127.0.0.60",
        "allbad.test. MX 10 mx.refused.test.",
    ], zones=[("refused.test.", "always_refuse")])
    results, p = run(dns.address, ("mx", "refused.test"), ("host", "mx.refused.test"),
                     ("mx", "partly.test"), ("mx", "allbad.test"))
    assert p.returncode == 0, p.stderr
    by_name = {r["name"]: r for r in results}
    r = by_name["refused.test"]
    assert r["status"] == "TEMPFAIL" and "SERVFAIL" in r["error"], r
    assert by_name["mx.refused.test"]["status"] == "TEMPFAIL"
    # A failing MX host is skipped when another one has an address...
    assert hosts(by_name["partly.test"]) == [("mx.partly.test", 20, ["127.0.0.60:25"])]
    # ... but when none has, it is worth retrying: not a permanent failure.
    r = by_name["allbad.test"]
    assert r["status"] == "TEMPFAIL", r
    assert r["error"] == "DNS failure looking up the address of the MX hosts of allbad.test"


def test_dead_forwarder_is_tempfail_in_bounded_time():
    port = free_udp_tcp_port()           # nothing listens there
    start = time.monotonic()
    results, p = run(f"127.0.0.1:{port}", ("mx", "example.test"), ("host", "mx.example.test"),
                     timeout_ms=2000, concurrent=True)
    elapsed = time.monotonic() - start
    assert p.returncode == 0, p.stderr
    assert [r["status"] for r in results] == ["TEMPFAIL", "TEMPFAIL"], results
    assert all(r["hosts"] == [] and r["error"] for r in results)
    assert all(1500 <= r["elapsed_ms"] <= 4000 for r in results), results
    assert elapsed < 8, elapsed


def test_silent_server_is_tempfail(dns_server):
    # A server that takes the packets and never answers (no ICMP either).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        forwarder = f"127.0.0.1:{s.getsockname()[1]}"
        results, p = run(forwarder, ("mx", "example.test"), timeout_ms=700)
        assert p.returncode == 0, p.stderr
        r = results[0]
        assert r["status"] == "TEMPFAIL", r
        assert "timeout" in r["error"]
        assert 600 <= r["elapsed_ms"] <= 3000, r
    finally:
        s.close()


def test_fixture_starts_fast_and_stops():
    start = time.monotonic()
    server = DNSServer(["fast.test. A 127.0.0.1"]).start()
    try:
        assert time.monotonic() - start < 5
        r = one(server, "host", "fast.test")
        assert hosts(r) == [("fast.test", 0, ["127.0.0.1:25"])]
        proc = server.proc
    finally:
        server.stop()
    assert proc.poll() is not None
