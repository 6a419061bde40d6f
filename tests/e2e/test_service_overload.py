"""Admission control (issue #16) on a real server: a burst beyond the in-flight limit gets 503 + Retry-After
while health, readiness and metrics answer (the middleware alone: tests/unit/test_service_admission.py).

Nothing here is timed: requests are held in flight deterministically by clients that send their
headers but withhold their body.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from service_util import assert_error_shape, metric_sum, parse_metrics


def hold(port: int, path: str = "/recommend") -> socket.socket:
    """A request whose headers arrive but whose body never does: admitted, then in flight until closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode())
    return sock


def in_flight(http: httpx.Client) -> float:
    return metric_sum(parse_metrics(http.get("/metrics").text), "r2end_in_flight_requests")


def test_a_burst_beyond_the_limit_gets_503_while_health_answers(make_service):
    server = make_service(max_inflight=2, retry_after_seconds=4)
    body = {"history": [{"item_id": "1", "timestamp": 881250949}], "k": 3}
    with server.client() as http:
        held = [hold(server.port), hold(server.port, "/recommend/batch")]
        try:
            for _ in range(300):  # wait until the server has admitted both (no timing is asserted)
                if in_flight(http) == 2:
                    break
                threading.Event().wait(0.05)
            assert in_flight(http) == 2
            barrier = threading.Barrier(8)

            def one(_):
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    barrier.wait(timeout=30)
                    return client.post("/recommend", json=body)

            with ThreadPoolExecutor(8) as pool:
                burst = list(pool.map(one, range(8)))
            for response in burst:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "4"
                [detail] = assert_error_shape(response)
                assert detail["type"] == "overloaded"
            assert (
                http.put("/items/x", json={"title": "X"}).status_code == 503
            )  # writes encode too: refused before the credential check
            for path in ("/healthz", "/readyz", "/metrics", "/items/1", "/openapi.json"):
                assert http.get(path).status_code == 200, path
            metrics = parse_metrics(http.get("/metrics").text)
            assert metric_sum(metrics, "r2end_errors_total", reason="overloaded") == 9
        finally:
            for sock in held:
                sock.close()
        for _ in range(300):  # the withheld requests end when their clients go away
            if in_flight(http) == 0:
                break
            threading.Event().wait(0.05)
        assert in_flight(http) == 0
        assert http.post("/recommend", json=body).status_code == 200
