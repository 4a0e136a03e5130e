"""Base URL templates and the internal-address guard. No external DNS: IP literals, ``localhost`` and
numeric forms resolve locally; other names go through an injected resolver."""

from __future__ import annotations

import socket
from collections.abc import Iterable

import pytest

from hissuno_airflow.kit.errors import InputError, ProviderUnavailable
from hissuno_airflow.kit.urls import (
    Resolver,
    build_base_url,
    check_public_url,
    expand_base_url,
    host_fields,
    template_fields,
)

ZENDESK = "https://{subdomain}.zendesk.com"
JIRA = "https://api.atlassian.com/ex/jira/{cloud_id}"
GHE = "{host_url}/api/v3"


def resolver(table: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int) -> Iterable[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def never(host: str, port: int) -> Iterable[str]:
    raise AssertionError(f"resolved {host!r}")


# --- expansion -------------------------------------------------------------------------------------


def test_templates_expand() -> None:
    assert expand_base_url(ZENDESK, {"subdomain": "Acme-Support"}) == "https://Acme-Support.zendesk.com"
    cloud = "1a2b3c4d-0000-4000-8000-123456789abc"
    assert expand_base_url(JIRA, {"cloud_id": cloud}) == f"https://api.atlassian.com/ex/jira/{cloud}"
    assert expand_base_url("{host_url}", {"host_url": " https://ghe.example.com/ "}) == "https://ghe.example.com"
    assert expand_base_url(GHE, {"host_url": "https://ghe.example.com:8443/"}) == "https://ghe.example.com:8443/api/v3"
    assert template_fields("https://{a}.x.com/{b}/{a}") == ("a", "b")
    assert host_fields(ZENDESK) == ("subdomain",) and host_fields(JIRA) == () and host_fields(GHE) == ("host_url",)


@pytest.mark.parametrize(
    "value",
    ["evil.com/x?", "acme.zendesk.com", "a_b", "-acme", "acme-", "a" * 64, "évil", "ac me", "127.0.0.1", "[::1]"],
)
def test_a_host_placeholder_takes_exactly_one_dns_label(value: str) -> None:
    with pytest.raises(InputError, match=r"^subdomain: expected one DNS label") as info:
        expand_base_url(ZENDESK, {"subdomain": value})
    assert info.value.field == "subdomain"


def test_a_label_longer_than_63_after_joining_the_template_text_is_refused() -> None:
    with pytest.raises(InputError, match="not a valid host name") as info:
        expand_base_url("https://api-{region}.example.com", {"region": "r" * 60})
    assert info.value.field == "region"


def test_a_path_placeholder_is_one_percent_encoded_segment() -> None:
    url = expand_base_url(JIRA, {"cloud_id": "a/../b?c=1#d %"})
    assert url == "https://api.atlassian.com/ex/jira/a%2F..%2Fb%3Fc%3D1%23d%20%25"
    for dots in (".", ".."):
        with pytest.raises(InputError, match="cloud_id: expected an identifier") as info:
            expand_base_url(JIRA, {"cloud_id": dots})
        assert info.value.field == "cloud_id"


@pytest.mark.parametrize(
    "value",
    ["ghe.example.com", "ftp://ghe.example.com", "javascript:alert(1)", "https://", "https:///path",
     "https://user:pw@ghe.example.com", "https://ghe.example.com/?token=x", "https://ghe.example.com:99999",
     "https://ghe.exa mple.com"],
)  # fmt: skip
def test_a_whole_url_value_must_be_http_with_a_host(value: str) -> None:
    with pytest.raises(InputError, match=r"^host_url: expected") as info:
        expand_base_url(GHE, {"host_url": value})
    assert info.value.field == "host_url"
    assert "pw" not in str(info.value) and "token=x" not in str(info.value)


@pytest.mark.parametrize("values", [{}, {"subdomain": None}, {"subdomain": "  "}])
def test_a_missing_value_names_the_field(values: dict[str, object]) -> None:
    with pytest.raises(InputError, match=r"^subdomain: required") as info:
        expand_base_url(ZENDESK, values)
    assert info.value.field == "subdomain"


def test_a_value_that_is_not_text_is_refused() -> None:
    with pytest.raises(InputError, match=r"^subdomain: expected text; got dict"):
        expand_base_url(ZENDESK, {"subdomain": {"a": 1}})


@pytest.mark.parametrize(
    "template",
    ["https://{user}@x.com", "https://x.com:{port}", "https://x.com/a?x={q}", "https://x.com/v{n}", "{a}x.com",
     "x.com/{a}", "https://x.com/{a"],
)  # fmt: skip
def test_malformed_templates_are_plugin_bugs(template: str) -> None:
    with pytest.raises(ValueError) as info:
        expand_base_url(template, {"user": "u", "port": "1", "q": "q", "n": "1", "a": "a"})
    assert not isinstance(info.value, InputError)


# --- the internal-address guard ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://127.0.0.1:8080", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("https://10.1.2.3", "private"),
        ("https://192.168.0.10", "private"),
        ("https://[fd00::1]", "private"),
        ("http://0.0.0.0", "unspecified"),
        ("http://224.0.0.1", "multicast"),
        ("http://240.0.0.1", "reserved"),
        ("http://100.100.100.200", "non-public"),  # shared address space; Alibaba Cloud metadata
    ],
)
def test_ip_literals_of_internal_networks_are_refused(url: str, category: str) -> None:
    with pytest.raises(InputError, match=f"is a {category} address") as info:
        check_public_url(url, field="host_url", resolve=never)
    assert info.value.field == "host_url"


def test_a_public_ip_literal_passes_without_resolving() -> None:
    assert check_public_url("https://1.1.1.1/api", field="host_url", resolve=never) == "https://1.1.1.1/api"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.1", "2130706433", "0x7f000001"])
def test_names_resolving_to_loopback_are_refused_with_the_real_resolver(host: str) -> None:
    with pytest.raises(InputError, match=r"resolves to .* which is a loopback address") as info:
        check_public_url(f"http://{host}:9/", field="host_url")
    assert info.value.field == "host_url"


def test_names_are_judged_by_every_address_they_resolve_to() -> None:
    resolve = resolver({"api.example.test": ["93.184.216.34"], "split.example.test": ["93.184.216.34", "10.0.0.7"]})
    assert check_public_url("https://api.example.test", field="host_url", resolve=resolve)
    with pytest.raises(InputError, match=r"'split.example.test' resolves to 10.0.0.7, which is a private address"):
        check_public_url("https://split.example.test", field="host_url", resolve=resolve)


def test_an_unresolvable_name_is_an_input_error_and_a_dns_hiccup_is_retriable() -> None:
    with pytest.raises(InputError, match="cannot be resolved"):
        check_public_url("https://nowhere.example.test", field="host_url", resolve=resolver({}))

    def flaky(host: str, port: int) -> Iterable[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(ProviderUnavailable, match="temporary DNS failure"):
        check_public_url("https://api.example.test", field="host_url", resolve=flaky)


def test_the_operators_override_may_point_inside() -> None:
    assert check_public_url("http://127.0.0.1:8080", field="host_url", allow_private=True) == "http://127.0.0.1:8080"
    assert check_public_url("http://localhost:5000", field="host_url", allow_private=True, resolve=never)
    with pytest.raises(InputError, match="expected an http"):
        check_public_url("file:///etc/passwd", field="host_url", allow_private=True)


def test_build_base_url_checks_only_hosts_a_value_chose() -> None:
    resolve = resolver({"acme.zendesk.com": ["104.16.51.111"], "intranet.zendesk.com": ["10.9.8.7"]})
    assert build_base_url(ZENDESK, {"subdomain": "acme"}, resolve=resolve) == "https://acme.zendesk.com"
    with pytest.raises(InputError, match="private address") as info:
        build_base_url(ZENDESK, {"subdomain": "intranet"}, resolve=resolve)
    assert info.value.field == "subdomain"
    assert build_base_url(JIRA, {"cloud_id": "abc"}, resolve=never) == "https://api.atlassian.com/ex/jira/abc"
    with pytest.raises(InputError, match="loopback") as info:
        build_base_url(GHE, {"host_url": "http://127.0.0.1:5000"}, resolve=never)
    assert info.value.field == "host_url"
