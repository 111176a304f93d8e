"""Where a webhook may go (SPEC §5.7): the URL rules at registration, and sends pinned to the checked address.

DNS is a stub (`webhooks.resolve_host`, the one lookup of a check), so a name can answer one thing
to the check and another to whatever looks it up next; IP literals are never looked up. Requests
are seen where they leave httpx (its transport): one addressed to a public IP is answered there,
so nothing leaves this machine; anything else goes on to the network, i.e. to the real receiver on
loopback.
"""

import socket
from ipaddress import ip_address

import httpx
import pytest

from tenants import webhooks
from tenants.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from tests.test_webhooks import finish_job_with_one_call, register, verify_signature

PUBLIC = "93.184.216.34"
OTHER_PUBLIC = "93.184.216.35"
BAD_PORT = "webhook_url port must be between 1 and 65535"


class StubDns:
    """Answers each name from a script of lookups (the last answer repeats) and records every lookup."""

    def __init__(self) -> None:
        self.script: dict[str, list[list[str]]] = {}
        self.lookups: list[tuple[str, int]] = []

    def answer(self, host: str, *answers: list[str]) -> None:
        self.script[host] = list(answers)

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        if host not in self.script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.script[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]


class Wire:
    """httpx's transport, watched: records every request; answers those to a public IP itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[httpx.Request] = []
        self.unreachable: set[str] = set()  # public addresses that refuse the connection
        real = httpx.HTTPTransport.handle_request

        def handle(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            self.sent.append(request)
            if request.url.host in self.unreachable:
                raise httpx.ConnectError("Connection refused", request=request)
            if _is_public_ip(request.url.host):
                return httpx.Response(204)
            return real(transport, request)

        monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle)


def _is_public_ip(host: str) -> bool:
    try:
        return ip_address(host).is_global
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def dns(monkeypatch) -> StubDns:
    stub = StubDns()
    monkeypatch.setattr(webhooks, "resolve_host", stub)
    return stub


@pytest.fixture
def wire(monkeypatch) -> Wire:
    return Wire(monkeypatch)


@pytest.fixture
def allow_private(settings):
    def set_to(value: bool) -> None:
        settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = value

    return set_to


# --- the URL rules, IP literals only ----------------------------------------------------------------

# (url, what it reaches): "global" is always accepted, "private" only with ALLOW_PRIVATE; "never"
# and "port" never are.
URLS = [
    (f"https://{PUBLIC}/hooks", "global"),
    (f"http://{PUBLIC}:65535/hooks", "global"),
    ("https://[2606:2800:220:1:248:1893:25c8:1946]/hooks", "global"),
    (f"https://[::ffff:{PUBLIC}]/hooks", "global"),  # IPv4-mapped
    ("https://[64:ff9b::5db8:d822]/hooks", "global"),  # NAT64 of 93.184.216.34
    ("https://[2002:5db8:d822::]/hooks", "global"),  # 6to4 of 93.184.216.34
    ("http://127.0.0.1:8080/hooks", "private"),
    ("http://[::1]:8080/hooks", "private"),
    ("http://10.1.2.3/hooks", "private"),
    ("http://192.168.1.20/hooks", "private"),
    ("http://169.254.169.254/latest/meta-data", "private"),
    ("http://100.64.0.1/hooks", "private"),  # carrier-grade NAT
    ("http://[fe80::1]/hooks", "private"),
    ("http://[fd00::1]/hooks", "private"),
    ("http://[2001:db8::1]/hooks", "private"),  # documentation
    ("http://[::ffff:127.0.0.1]/hooks", "private"),
    ("http://[::ffff:10.0.0.1]/hooks", "private"),
    ("http://[64:ff9b::7f00:1]/hooks", "private"),  # NAT64 of 127.0.0.1
    ("http://[64:ff9b::a00:1]/hooks", "private"),  # NAT64 of 10.0.0.1
    ("http://[64:ff9b:1::5db8:d822]/hooks", "private"),  # local-use NAT64 (RFC 8215), even of a public one
    ("http://[2002:7f00:1::]/hooks", "private"),  # 6to4 of 127.0.0.1
    ("http://[2002:c000:201::]/hooks", "private"),  # 6to4 of 192.0.2.1 (documentation)
    ("http://[::7f00:1]/hooks", "private"),  # IPv4-compatible, deprecated and unrouted
    ("http://224.0.0.1/hooks", "never"),
    ("http://239.255.255.250:1900/hooks", "never"),
    ("http://[ff02::1]/hooks", "never"),
    ("http://[ff0e::1]/hooks", "never"),  # global-scope multicast
    ("http://[::ffff:224.0.0.1]/hooks", "never"),
    ("http://[64:ff9b::e000:1]/hooks", "never"),  # NAT64 of 224.0.0.1
    ("http://[2002:e000:1::]/hooks", "never"),  # 6to4 of 224.0.0.1
    ("http://0.0.0.0:8080/hooks", "never"),
    ("http://0.1.2.3/hooks", "never"),
    ("http://[::]:8080/hooks", "never"),
    ("http://[::ffff:0.0.0.0]/hooks", "never"),
    ("http://255.255.255.255/hooks", "never"),
    (f"http://{PUBLIC}:0/hooks", "port"),
    ("http://127.0.0.1:0/hooks", "port"),
    (f"http://{PUBLIC}:65536/hooks", "port"),
    (f"http://{PUBLIC}:99999/hooks", "port"),
]
REASONS = {"private": webhooks.REFUSED_PRIVATE, "never": webhooks.REFUSED_NOT_UNICAST, "port": BAD_PORT}


@pytest.mark.parametrize("private_allowed", [False, True], ids=["public-only", "private-allowed"])
@pytest.mark.parametrize(("url", "reaches"), URLS)
def test_registration_accepts_only_unicast_targets(acme, dns, allow_private, private_allowed, url, reaches):
    allow_private(private_allowed)

    response = acme.api.post("/api/webhooks/register", {"webhook_url": url, "events": ["job.completed"]})

    if reaches == "global" or (reaches == "private" and private_allowed):
        assert response.status_code == 201, response.content
        assert WebhookEndpoint.objects.get().url == url
    else:
        assert response.status_code == 422, response.content
        [error] = response.json()["detail"]
        assert set(error) == {"loc", "msg", "type"}
        assert (error["loc"], error["msg"]) == (["body", "webhook_url"], REASONS[reaches])
        assert not WebhookEndpoint.objects.exists()
    assert dns.lookups == []  # an IP literal is never looked up


@pytest.mark.parametrize("private_allowed", [False, True], ids=["public-only", "private-allowed"])
def test_a_name_that_does_not_resolve_is_refused_unless_private_targets_are_allowed(
    acme, dns, allow_private, private_allowed
):
    """In development (and tests without DNS) a name is accepted at registration as before; every
    send resolves and checks it again."""
    allow_private(private_allowed)

    response = acme.api.post(
        "/api/webhooks/register", {"webhook_url": "https://hooks.example/in", "events": ["job.completed"]}
    )

    if private_allowed:
        assert response.status_code == 201, response.content
    else:
        assert response.status_code == 422
        assert response.json()["detail"][0]["msg"] == "webhook_url host 'hooks.example' does not resolve"
    assert set(dns.lookups) == {("hooks.example", 443)}


# --- sends go to the address that passed the check --------------------------------------------------


def due_again(delivery_id) -> None:
    webhooks.redeliver(delivery=WebhookDelivery.objects.get(pk=delivery_id))


@pytest.mark.parametrize(
    ("url", "host_header", "server_name"),
    [
        ("http://hooks.test:{port}/hooks", "hooks.test:{port}", None),
        ("https://hooks.test/hooks", "hooks.test", "hooks.test"),
    ],
    ids=["http", "https"],
)
def test_a_rebinding_name_is_sent_to_the_address_that_passed_the_check(
    acme, dns, wire, allow_private, webhook_receiver, url, host_header, server_name
):
    allow_private(False)
    port = webhook_receiver.server.server_address[1]  # were the name to reach loopback, the receiver is there
    url, host_header = url.format(port=port), host_header.format(port=port)
    dns.answer("hooks.test", [PUBLIC])
    register(acme, url)
    finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()
    dns.lookups.clear()
    dns.answer("hooks.test", [PUBLIC], ["127.0.0.1"])  # rebinding: the check's lookup, then any other

    outcome = webhooks.attempt_delivery(str(delivery.id))

    registered = httpx.URL(url)
    lookup_port = registered.port or 443
    assert dns.lookups == [("hooks.test", lookup_port)]  # one lookup for the attempt
    [request] = wire.sent
    assert request.url == registered.copy_with(host=PUBLIC)
    assert request.headers["host"] == host_header
    assert request.extensions.get("sni_hostname") == server_name  # TLS verifies the name, not the address
    assert outcome == DeliveryStatus.DELIVERED
    assert webhook_receiver.requests == []

    due_again(delivery.id)  # the next attempt looks again: now the check itself sees loopback
    assert webhooks.attempt_delivery(str(delivery.id)) == DeliveryStatus.PENDING

    assert dns.lookups == [("hooks.test", lookup_port)] * 2
    assert len(wire.sent) == 1 and webhook_receiver.requests == []
    assert WebhookDelivery.objects.get().last_error == webhooks.REFUSED_PRIVATE


def test_a_name_is_delivered_with_its_host_header_to_the_checked_address(acme, dns, allow_private, webhook_receiver):
    allow_private(True)
    port = webhook_receiver.server.server_address[1]
    dns.answer("hooks.test", ["127.0.0.1"])
    hook = register(acme, f"http://hooks.test:{port}/hooks")
    finish_job_with_one_call(acme)
    dns.lookups.clear()

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.DELIVERED

    assert dns.lookups == [("hooks.test", port)]
    [request] = webhook_receiver.requests
    assert request["headers"]["host"] == f"hooks.test:{port}"
    assert request["path"] == "/hooks"
    assert verify_signature(hook["secret"], request["headers"], request["body"])


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(acme, dns, allow_private, webhook_receiver):
    allow_private(True)
    port = webhook_receiver.server.server_address[1]
    dns.answer("hooks.test", ["::1", "127.0.0.1"])  # the receiver listens on 127.0.0.1 only
    register(acme, f"http://hooks.test:{port}/hooks")
    finish_job_with_one_call(acme)

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.DELIVERED

    [request] = webhook_receiver.requests
    assert request["headers"]["host"] == f"hooks.test:{port}"


def test_an_unreachable_public_address_falls_back_to_the_next_checked_one(acme, dns, wire, allow_private):
    allow_private(False)
    dns.answer("hooks.test", [OTHER_PUBLIC, PUBLIC])
    register(acme, "https://hooks.test/hooks")
    finish_job_with_one_call(acme)
    wire.unreachable.add(OTHER_PUBLIC)

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.DELIVERED

    assert [request.url.host for request in wire.sent] == [OTHER_PUBLIC, PUBLIC]
    assert {request.headers["host"] for request in wire.sent} == {"hooks.test"}


@pytest.mark.parametrize(
    ("answers", "private_allowed", "reason"),
    [
        ([PUBLIC, "10.0.0.7"], False, webhooks.REFUSED_PRIVATE),
        ([PUBLIC, "::1"], False, webhooks.REFUSED_PRIVATE),
        ([PUBLIC, "64:ff9b::7f00:1"], False, webhooks.REFUSED_PRIVATE),
        (["127.0.0.1", "224.0.0.1"], True, webhooks.REFUSED_NOT_UNICAST),
        ([PUBLIC, "ff02::1"], True, webhooks.REFUSED_NOT_UNICAST),
    ],
)
def test_a_name_with_one_refused_address_is_refused(acme, dns, wire, allow_private, answers, private_allowed, reason):
    allow_private(private_allowed)
    dns.answer("multi.test", answers)

    refused = acme.api.post(
        "/api/webhooks/register", {"webhook_url": "https://multi.test/hooks", "events": ["job.completed"]}
    )
    assert refused.status_code == 422
    assert [(e["loc"], e["msg"]) for e in refused.json()["detail"]] == [(["body", "webhook_url"], reason)]
    assert not WebhookEndpoint.objects.exists()

    dns.answer("multi.test", answers[:1])  # registered while the name answered one good address...
    register(acme, "https://multi.test/hooks")
    finish_job_with_one_call(acme)
    dns.answer("multi.test", answers)  # ...and sent once it answers them all

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.PENDING
    assert wire.sent == []
    assert WebhookDelivery.objects.get().last_error == reason
