"""The client's address behind a balancer: X-Forwarded-For believed from trusted proxies only,
so the failed-login limiter and the audit trail see each client, and a client cannot forge
another's address."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import httpx

from cargohold.registry.forwarded import client_address
from tests.support.servers import Cargohold

BALANCERS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


def test_the_first_untrusted_hop_from_the_right_is_the_client() -> None:
    assert client_address("10.1.2.3", "198.51.100.7", BALANCERS) == "198.51.100.7"
    assert client_address("10.1.2.3", "198.51.100.7, 10.9.9.9", BALANCERS) == "198.51.100.7"
    # What the client sent itself stays to the left of what the proxies appended.
    assert client_address("10.1.2.3", "203.0.113.66, 198.51.100.7", BALANCERS) == "198.51.100.7"
    assert client_address("10.1.2.3", "2001:db8::5", BALANCERS) == "2001:db8::5"


def test_the_header_is_ignored_unless_a_trusted_proxy_sent_it() -> None:
    assert client_address("198.51.100.7", "203.0.113.66", BALANCERS) == "198.51.100.7"
    assert client_address("10.1.2.3", "203.0.113.66", ()) == "10.1.2.3"
    assert client_address("10.1.2.3", None, BALANCERS) == "10.1.2.3"
    assert client_address("10.1.2.3", "not-an-address, 198.51.100.7", BALANCERS) == "198.51.100.7"
    assert client_address("10.1.2.3", "198.51.100.7, bogus", BALANCERS) == "10.1.2.3", "a malformed hop"
    assert client_address("10.1.2.3", "10.4.4.4, 127.0.0.1", BALANCERS) == "10.4.4.4", "all hops trusted"


def failing_logins(server: Cargohold, forwarded_for: str, times: int) -> list[int]:
    with httpx.Client(base_url=server.url, headers={"x-forwarded-for": forwarded_for}) as client:
        return [client.get("/v2/", auth=("admin", "wrong")).status_code for _ in range(times)]


def right_login(server: Cargohold, forwarded_for: str) -> int:
    with httpx.Client(base_url=server.url, headers={"x-forwarded-for": forwarded_for}) as client:
        return client.get("/v2/", auth=("admin", server.admin_password())).status_code


def test_a_guesser_behind_the_balancer_locks_out_only_itself(
    cargohold_with: Callable[[dict[str, str]], Cargohold],
) -> None:
    limits = {"CARGOHOLD_AUTH": "on", "CARGOHOLD_AUTH_MAX_FAILURES": "3", "CARGOHOLD_AUTH_FAILURE_WINDOW": "60s"}
    server = cargohold_with({**limits, "CARGOHOLD_TRUSTED_PROXIES": "127.0.0.1"})
    assert failing_logins(server, "198.51.100.7", 4) == [401, 401, 401, 429]
    assert right_login(server, "198.51.100.7") == 429
    assert right_login(server, "198.51.100.8") == 200, "another client behind the same balancer"
    with httpx.Client(base_url=server.url, auth=("admin", server.admin_password())) as api:
        events = api.get("/api/v1/audit", params={"action": "auth.login"}).json()
    listed = events["events"] if isinstance(events, dict) else events
    assert {event["address"] for event in listed} == {"198.51.100.7"}, "the audit trail names the client"


def test_without_trusted_proxies_the_header_changes_nothing(
    cargohold_with: Callable[[dict[str, str]], Cargohold],
) -> None:
    limits = {"CARGOHOLD_AUTH": "on", "CARGOHOLD_AUTH_MAX_FAILURES": "3", "CARGOHOLD_AUTH_FAILURE_WINDOW": "60s"}
    server = cargohold_with(limits)
    assert failing_logins(server, "198.51.100.7", 4) == [401, 401, 401, 429]
    assert right_login(server, "198.51.100.8") == 429, "a forged header does not make another client"
