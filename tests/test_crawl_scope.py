"""Crawler scope and the network policy, against real HTTP servers on 127.0.0.1.

No test sends anything off this machine, even against a crawler without the policy: the
``egress`` fixture answers DNS only for localhost and numeric hosts (a fake name table for the
rebinding test), refuses every connection that is not to 127.0.0.1 or ::1, and records every
lookup and connection attempt, which is how the tests show a refusal came before any connection.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from types import SimpleNamespace

import pytest

from conftest import lmchain_cmd, subprocess_env
from crawl_site import Site, page, prose, send
from lmchain.artifacts import read_jsonl
from lmchain.stages.collect import run
from lmchain.collect.netguard import address_kind, parse_allow
from lmchain.config import CollectConfig, CrawlConfig
from lmchain.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1")


@pytest.fixture
def egress(monkeypatch):
    log = SimpleNamespace(lookups=[], connects=[], names={})
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        log.lookups.append(name)
        if name in log.names:  # the fake DNS: successive answers, the last one repeated
            answers = log.names[name]
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]
        if name == "localhost" or re.fullmatch(r"[0-9a-fA-Fx.:]+", name):  # answered without DNS
            return real_getaddrinfo(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"test: no DNS for {name}")

    def connect(sock, address):
        log.connects.append(tuple(address[:2]))
        if address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"test: no traffic to {address[0]}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return log


def port_of(site: Site) -> int:
    return site.server.server_port


def crawl(ctx, tmp_path, seeds, **kw):
    opts = dict(max_pages=30, max_depth=2, timeout_s=2, retries=0, backoff_s=0.01,
                state_path=str(tmp_path / f"state-{len(list(tmp_path.glob('state-*')))}.sqlite"))
    cfg = CrawlConfig(seeds=seeds, **{**opts, **kw})
    m = run(CollectConfig(crawl=cfg), ctx)
    records = {r["url"]: r for r in read_jsonl(m.outputs["records"])}
    rejects = {r["url"]: r for r in read_jsonl(m.outputs["rejects"])}
    return m, records, rejects


def redirect_to(target: str):
    def handler(req, route, site):
        site._record(req, 302)
        send(req, 302, b"", "text/plain", {"Location": target})
    return handler


def small_site(site: Site, links=()) -> Site:
    site.add("/index.html", page("Home", *prose("the home page"), links=list(links)))
    site.add("/page.html", page("Page", *prose("another page")))
    return site


def test_the_default_refuses_non_public_seeds_before_any_connection(ctx, tmp_path, egress):
    with Site() as site:
        small_site(site)
        port = port_of(site)
        seeds = {f"http://127.0.0.1:{port}/index.html": "loopback",
                 f"http://localhost:{port}/index.html": "loopback",  # a name that resolves to 127.0.0.1
                 f"http://[::1]:{port}/index.html": "loopback",
                 f"http://[::ffff:127.0.0.1]:{port}/index.html": "loopback",  # IPv4 inside IPv6
                 f"http://2130706433:{port}/index.html": "loopback",  # 127.0.0.1 spelt as one number
                 f"http://0.0.0.0:{port}/index.html": "unspecified",
                 "http://10.0.0.1/index.html": "private",
                 "http://192.168.1.1/index.html": "private",
                 "http://100.64.0.1/index.html": "carrier-grade NAT",
                 "http://[fe80::1]/index.html": "link-local",
                 "http://[fc00::1]/index.html": "unique-local",
                 "http://224.0.0.1/index.html": "multicast",
                 "http://169.254.169.254/latest/meta-data/": "cloud metadata",
                 "http://[fd00:ec2::254]/latest/meta-data/": "cloud metadata",
                 "http://metadata.google.internal/computeMetadata/v1/": "cloud metadata"}
        m, records, rejects = crawl(ctx, tmp_path, list(seeds))
        assert site.hits() == [] and egress.connects == []  # refused before any connection
        assert "metadata.google.internal" not in egress.lookups  # refused by name, before DNS
    assert records == {}
    for seed, kind in seeds.items():
        reason = rejects[seed]["reason"]
        assert reason.startswith("blocked_address") and kind in reason, (seed, reason)
    assert m.drop_reasons == {"blocked_address": len(seeds)}
    assert "allow_private_networks" in rejects[f"http://127.0.0.1:{port}/index.html"]["reason"]


def test_opting_in_opens_your_own_sites_but_never_cloud_metadata(ctx, tmp_path, egress):
    with Site() as site, Site() as other:
        small_site(site, ["/page.html"])
        metadata = ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/",
                    "http://metadata.google.internal/computeMetadata/v1/"]
        m, records, rejects = crawl(ctx, tmp_path, [site.url + "/index.html", *metadata],
                                    allow_private_networks=True)
        assert set(records) == {site.url + "/index.html", site.url + "/page.html"}
        assert all(rejects[u]["reason"].startswith("blocked_address") and "metadata" in rejects[u]["reason"]
                   for u in metadata)
        assert {host for host, _ in egress.connects} == {"127.0.0.1"}

        # allow_networks: exactly the listed address and port (the address connected to is what counts,
        # whatever name led there).
        small_site(other)
        m, records, rejects = crawl(ctx, tmp_path, [site.url + "/index.html", other.url + "/index.html",
                                                    f"http://localhost:{port_of(other)}/index.html"],
                                    allow_networks=[f"127.0.0.1:{port_of(site)}"])
        assert set(records) == {site.url + "/index.html", site.url + "/page.html"} and other.hits() == []
        assert rejects[other.url + "/index.html"]["reason"].startswith("blocked_address")
        assert rejects[f"http://localhost:{port_of(other)}/index.html"]["reason"].startswith(
            "blocked_address: localhost resolves to")


def test_a_redirect_to_a_refused_address_is_refused_on_that_hop(ctx, tmp_path, egress):
    with Site() as a, Site() as b:
        pa, pb = port_of(a), port_of(b)
        small_site(b)
        a.add("/to-b", handler=redirect_to(f"http://127.0.0.1:{pb}/page.html"))
        a.add("/to-localhost", handler=redirect_to(f"http://localhost:{pb}/page.html"))
        a.add("/to-metadata", handler=redirect_to("http://169.254.169.254/latest/meta-data/"))
        a.add("/to-private", handler=redirect_to("http://10.0.0.1/index.html"))
        # robots.txt names a sitemap that redirects to the refused server: that hop is refused too.
        a.add("/robots.txt", f"User-agent: *\nAllow: /\nSitemap: {a.url}/sitemap-moved.xml\n", content_type="text/plain")
        a.add("/sitemap-moved.xml", handler=redirect_to(f"http://127.0.0.1:{pb}/sitemap.xml"))
        small_site(a, ["/to-b", "/to-localhost", "/to-metadata", "/to-private", "/page.html"])
        # Scope lets every target through, so what refuses them is the network policy alone.
        m, records, rejects = crawl(
            ctx, tmp_path, [a.url + "/index.html"], allow_networks=[f"127.0.0.1:{pa}"],
            allowed_domains=[a.url, b.url, f"localhost:{pb}", "169.254.169.254", "10.0.0.1"])
        assert b.hits() == []
        assert {address for address in egress.connects} == {("127.0.0.1", pa)}
    assert set(records) == {a.url + "/index.html", a.url + "/page.html"}
    for path, target in (("/to-b", f"http://127.0.0.1:{pb}/page.html"), ("/to-localhost", f"http://localhost:{pb}/page.html"),
                         ("/to-metadata", "http://169.254.169.254/latest/meta-data/"),
                         ("/to-private", "http://10.0.0.1/index.html")):
        rec = rejects[a.url + path]
        assert rec["reason"].startswith("blocked_address") and rec["redirected_to"] == target, rec
    assert rejects[a.url + "/sitemap-moved.xml"]["reason"].startswith("blocked_address: 127.0.0.1")


def test_scope_is_scheme_host_and_port(ctx, tmp_path, egress):
    with Site() as a, Site() as b:
        small_site(b)
        small_site(a, ["/page.html", b.url + "/page.html", f"https://127.0.0.1:{port_of(a)}/page.html",
                       f"http://localhost:{port_of(a)}/page.html"])
        m, records, rejects = crawl(ctx, tmp_path, [a.url + "/index.html"], allow_private_networks=True)
        assert b.hits() == []
        assert set(records) == {a.url + "/index.html", a.url + "/page.html"}
        assert {host_port for host_port in egress.connects} == {("127.0.0.1", port_of(a))}

        # allowed_domains: a bare host means the default ports; a port must be named.
        m, records, _ = crawl(ctx, tmp_path, [a.url + "/index.html"], allow_private_networks=True,
                              allowed_domains=["127.0.0.1"])
        assert records == {} and b.hits() == []
        m, records, _ = crawl(ctx, tmp_path, [a.url + "/index.html"], allow_private_networks=True,
                              allowed_domains=[f"127.0.0.1:{port_of(a)}", f"http://127.0.0.1:{port_of(b)}"])
        assert b.url + "/page.html" in records and len(b.hits("/page.html")) == 1


def test_robots_txt_redirects_stay_in_scope(ctx, tmp_path, egress):
    with Site() as a, Site() as b, Site() as c:
        b.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
        a.add("/robots.txt", handler=redirect_to(b.url + "/robots.txt"))
        small_site(a, ["/page.html"])
        m, records, rejects = crawl(ctx, tmp_path, [a.url + "/index.html"], allow_private_networks=True)
        assert b.hits() == []  # the redirect out of scope was not followed ...
        assert a.paths().count("/index.html") == 0 and records == {}  # ... and means: disallow all
        reason = rejects[a.url + "/index.html"]["reason"]
        assert reason.startswith("robots_redirect_offsite") and b.url in reason

        # Inside the scope, a redirected robots.txt is read and obeyed.
        c.add("/robots.txt", handler=redirect_to("/robots-real.txt"))
        c.add("/robots-real.txt", "User-agent: *\nDisallow: /private/\n", content_type="text/plain")
        c.add("/private/x.html", page("Private", *prose("secrets")))
        small_site(c, ["/page.html", "/private/x.html"])
        m, records, rejects = crawl(ctx, tmp_path, [c.url + "/index.html"], allow_private_networks=True)
        assert set(records) == {c.url + "/index.html", c.url + "/page.html"}
        assert rejects[c.url + "/private/x.html"]["reason"] == "robots_disallowed"
        assert "/private/x.html" not in c.paths()


def test_dns_rebinding_cannot_move_the_connection(ctx, tmp_path, egress):
    """The name answers 127.0.0.1 (allowed) first and 127.0.0.2 (not allowed) afterwards: the
    crawl resolves once and connects only to the address it checked."""
    with Site() as site:
        port = port_of(site)
        for i in range(5):  # Connection: close makes every request open a new connection
            site.add(f"/p{i}.html", page(f"P{i}", *prose(f"page {i}"), links=[f"/p{i + 1}.html"]),
                     headers={"Connection": "close"})
        egress.names["rebind.test"] = ["127.0.0.1", "127.0.0.2"]
        m, records, rejects = crawl(ctx, tmp_path, [f"http://rebind.test:{port}/p0.html"], max_depth=10,
                                    allow_networks=[f"127.0.0.1:{port}"], respect_robots=False, sitemaps=False)
        assert len(records) == 5, rejects
        assert egress.lookups.count("rebind.test") == 1
        assert set(egress.connects) == {("127.0.0.1", port)} and len(egress.connects) >= 5


def test_the_cli_refuses_loopback_unless_told(tmp_path):
    with Site() as site:
        small_site(site)
        base = lmchain_cmd("collect", "--seed", site.url + "/index.html", "--no-sitemaps", "--timeout", "5")
        env = subprocess_env(tmp_path / "home")
        out = subprocess.run(base + ["--out", str(tmp_path / "refused"), "--state", str(tmp_path / "a.sqlite")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert site.hits() == [] and "'blocked_address': 1" in out.stdout
        rejects = [json.loads(line) for line in (tmp_path / "refused" / "rejects.jsonl").read_text().splitlines()]
        assert "--allow-network" in rejects[0]["reason"]
        out = subprocess.run(base + ["--out", str(tmp_path / "ok"), "--state", str(tmp_path / "b.sqlite"),
                                     "--allow-network", f"127.0.0.1:{port_of(site)}"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "collect: 1 records" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("address, kind", [
    ("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.2", "loopback"), ("::1", "loopback"),
    ("172.16.5.4", "private"), ("100.127.255.255", "carrier-grade NAT"), ("169.254.0.9", "link-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"), ("ff02::1", "multicast"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::7f00:1", "loopback"), ("2002:a00:1::1", "private"),
    ("::", "unspecified"), ("240.0.0.1", "private"), ("192.0.2.1", "private"), ("fe80::1%eth0", "link-local"),
])
def test_address_kinds(address, kind):
    assert address_kind(ipaddress.ip_address(address.split("%")[0])) == kind


def test_policy_entries_are_checked_with_the_key_in_the_message():
    assert parse_allow("[::1]:8080").port == 8080 and parse_allow("10.0.0.0/8").network.num_addresses == 2 ** 24
    assert parse_allow("Wiki.Intranet:8443").host == "wiki.intranet"
    with pytest.raises(ConfigError, match="collect.crawl.allow_networks.*neither a CIDR"):
        CrawlConfig(allow_networks=["not a network!"])
    with pytest.raises(ConfigError, match="collect.crawl.allow_networks.*port"):
        CrawlConfig(allow_networks=["127.0.0.1:99999"])
    with pytest.raises(ConfigError, match="collect.crawl.allowed_domains"):
        CrawlConfig(allowed_domains=["ftp://example.org"])
