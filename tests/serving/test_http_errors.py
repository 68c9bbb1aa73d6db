"""Every refusal of `jflow-export serve`, over raw HTTP: OpenAI's error JSON with the right status, type, code and
field; a full queue answers 503 with Retry-After; a client that hangs up stops its work; and the server still
serves afterwards."""

import base64
import io
import json
import socket
import time

import httpx
import pytest
from PIL import Image

pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")
from http_server_process import ServeProcess, answer_artifact  # noqa: E402

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    artifact = answer_artifact(tiny_artifact, tmp_path_factory.mktemp("serve") / "tiny-serve")
    proc = ServeProcess(artifact, "--api-key", KEY, "--queue", "1", "--max-body-mib", "1",
                        "--max-image-pixels", "200000", "--threads", "1").start()
    yield proc
    assert proc.stop() == 0, proc.output()


def png_url(width=64, height=48, fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_body(url=None, text="What is in this picture?", **fields):
    content = [{"type": "image_url", "image_url": {"url": url or png_url()}}, {"type": "text", "text": text}]
    return {"messages": [{"role": "user", "content": content}], **fields}


CHAT, IMAGES = "/v1/chat/completions", "/v1/images/generations"
DAMAGED = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n but then nothing").decode()
# (what, method, path, headers, body (dict, or bytes sent as is), status, type, code, param)
CASES = [
    ("no key", "POST", CHAT, {}, chat_body(), 401, "authentication_error", "invalid_api_key", None),
    ("wrong key", "POST", CHAT, {"Authorization": f"Bearer {KEY[:-1]}X"}, chat_body(), 401,
     "authentication_error", "invalid_api_key", None),
    ("key without Bearer", "GET", "/v1/models", {"Authorization": KEY}, None, 401, "authentication_error",
     "invalid_api_key", None),
    ("unknown endpoint", "GET", "/v1/embeddings", AUTH, None, 404, "not_found_error", "unknown_url", None),
    ("wrong method", "GET", CHAT, AUTH, None, 405, "invalid_request_error", "method_not_allowed", None),
    ("not JSON", "POST", CHAT, AUTH, b"{not json", 400, "invalid_request_error", "invalid_json", None),
    ("JSON array", "POST", CHAT, AUTH, b"[1, 2]", 400, "invalid_request_error", "invalid_json", None),
    ("body over the limit", "POST", CHAT, AUTH, b"x" * ((1 << 20) + 1), 413, "invalid_request_error",
     "request_too_large", None),
    ("remote image URL", "POST", CHAT, AUTH, chat_body("https://example.com/cat.png"), 400, "invalid_request_error",
     "unsupported_url", "messages[0].content[0].image_url"),
    ("picture over the pixel limit", "POST", CHAT, AUTH, chat_body(png_url(600, 600)), 413, "invalid_request_error",
     "image_too_large", "messages[0].content[0].image_url"),
    ("damaged picture", "POST", CHAT, AUTH, chat_body(DAMAGED), 400, "invalid_request_error", "invalid_value",
     "messages[0].content[0].image_url"),
    ("not base64", "POST", CHAT, AUTH, chat_body("data:image/png;base64,@@@@"), 400, "invalid_request_error",
     "invalid_value", "messages[0].content[0].image_url"),
    ("a GIF", "POST", CHAT, AUTH, chat_body(png_url(fmt="GIF")), 400, "invalid_request_error", "invalid_value",
     "messages[0].content[0].image_url"),
    ("no picture", "POST", CHAT, AUTH, {"messages": [{"role": "user", "content": "hello"}]}, 400,
     "invalid_request_error", "invalid_value", "messages[0].content"),
    ("no messages", "POST", CHAT, AUTH, {}, 400, "invalid_request_error", "missing_field", "messages"),
    ("history", "POST", CHAT, AUTH, {"messages": chat_body()["messages"] * 2}, 400, "invalid_request_error",
     "invalid_value", "messages"),
    ("temperature", "POST", CHAT, AUTH, chat_body(temperature=5), 400, "invalid_request_error", "invalid_value",
     "temperature"),
    ("top_p", "POST", CHAT, AUTH, chat_body(top_p=0), 400, "invalid_request_error", "invalid_value", "top_p"),
    ("max_tokens 0", "POST", CHAT, AUTH, chat_body(max_tokens=0), 400, "invalid_request_error", "invalid_value",
     "max_tokens"),
    ("max_tokens past the artifact", "POST", CHAT, AUTH, chat_body(max_tokens=513), 400, "invalid_request_error",
     "invalid_value", "max_tokens"),
    ("seed", "POST", CHAT, AUTH, chat_body(seed=-1), 400, "invalid_request_error", "invalid_value", "seed"),
    ("stream not a bool", "POST", CHAT, AUTH, chat_body(stream="yes"), 400, "invalid_request_error",
     "invalid_value", "stream"),
    ("stop sequences", "POST", CHAT, AUTH, chat_body(stop=["\n"]), 400, "invalid_request_error",
     "unsupported_parameter", "stop"),
    ("several choices", "POST", CHAT, AUTH, chat_body(n=2), 400, "invalid_request_error", "unsupported_parameter", "n"),
    ("another model", "POST", CHAT, AUTH, chat_body(model="gpt-4o"), 404, "not_found_error", "model_not_found",
     "model"),
    ("no prompt", "POST", IMAGES, AUTH, {"n": 1}, 400, "invalid_request_error", "missing_field", "prompt"),
    ("empty prompt", "POST", IMAGES, AUTH, {"prompt": "  "}, 400, "invalid_request_error", "invalid_value", "prompt"),
    ("size", "POST", IMAGES, AUTH, {"prompt": "a cat", "size": "1024x1024"}, 400, "invalid_request_error",
     "invalid_value", "size"),
    ("too many images", "POST", IMAGES, AUTH, {"prompt": "a cat", "n": 5}, 400, "invalid_request_error",
     "invalid_value", "n"),
    ("url response", "POST", IMAGES, AUTH, {"prompt": "a cat", "response_format": "url"}, 400,
     "invalid_request_error", "invalid_value", "response_format"),
    ("steps", "POST", IMAGES, AUTH, {"prompt": "a cat", "steps": 101}, 400, "invalid_request_error",
     "invalid_value", "steps"),
    ("cfg", "POST", IMAGES, AUTH, {"prompt": "a cat", "cfg": float("inf")}, 400, "invalid_request_error",
     "invalid_value", "cfg"),  # Python's JSON reads Infinity; the server refuses it
    ("cfg past 100", "POST", IMAGES, AUTH, {"prompt": "a cat", "cfg": 101}, 400, "invalid_request_error",
     "invalid_value", "cfg"),
    ("prompt too long for the context", "POST", IMAGES, AUTH, {"prompt": "a cat " * 600, "steps": 1}, 400,
     "invalid_request_error", "invalid_value", "prompt"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_error_has_its_status_type_and_field(server, case):
    what, method, path, headers, body, status, type_, code, param = case
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    response = httpx.request(method, server.url + path, headers={"Content-Type": "application/json", **headers},
                             content=content, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (type_, code, param), error
    assert isinstance(error["message"], str) and 10 < len(error["message"]) < 600
    assert "Traceback" not in response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    if param:
        assert error["message"].startswith(param) or param in error["message"], error["message"]


def test_messages_say_what_to_do(server):
    def message(body, path=CHAT):
        return httpx.post(server.url + path, headers=AUTH, json=body, timeout=30).json()["error"]["message"]
    assert "does not fetch pictures from the network" in message(chat_body("http://10.0.0.1/x.png"))
    assert "600x600" in message(chat_body(png_url(600, 600))) and "--max-image-pixels" in message(
        chat_body(png_url(600, 600)))
    assert "384x384" in message({"prompt": "a cat", "size": "256x256"}, IMAGES)
    assert "tokens" in message({"prompt": "a cat " * 600, "steps": 1}, IMAGES)


def test_a_body_without_length_is_cut_at_the_limit(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB in all, sent chunked: no Content-Length to refuse it by
    response = httpx.post(server.url + CHAT, headers=AUTH, content=chunks(), timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def send_raw(server, path, body) -> socket.socket:
    """A request on a socket of our own, so that the test can hang up whenever it likes."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_full_queue_is_503_with_retry_after_and_hung_up_clients_stop_their_work(server):
    before = server.wait_idle()["counters"]
    running = send_raw(server, IMAGES, {"prompt": "a long one", "steps": 100, "seed": 1})
    server.wait_for(lambda h: h["running"] == "image")
    waiting = send_raw(server, IMAGES, {"prompt": "a second one", "steps": 100, "seed": 2})
    server.wait_for(lambda h: h["waiting"] == 1)
    full = httpx.post(server.url + IMAGES, headers=AUTH, json={"prompt": "a third", "steps": 1}, timeout=30)
    assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1
    assert (full.json()["error"]["type"], full.json()["error"]["code"]) == ("server_busy_error", "queue_full")
    waiting.close()  # hangs up while queued: dropped from the queue, never run
    server.wait_for(lambda h: h["waiting"] == 0)
    running.close()  # hangs up mid-generation: the ODE loop stops at its next step
    after = server.wait_idle()["counters"]
    assert after["cancelled"] - before.get("cancelled", 0) == 2
    assert after["rejected"] - before.get("rejected", 0) == 1
    assert after["steps_run"] - before.get("steps_run", 0) < 100, after  # not the 100 steps nobody waits for


def test_a_stream_cut_by_its_client_stops_decoding(server):
    full = httpx.post(server.url + CHAT, headers=AUTH, json=chat_body(), timeout=60).json()
    length = full["usage"]["completion_tokens"]
    assert length > 100, full  # long enough to be cut
    before = server.wait_idle()["counters"]
    sock = send_raw(server, CHAT, chat_body(stream=True))
    received = b""
    while received.count(b"data: ") < 2:  # the role chunk, then the first text piece
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200") and b"text/event-stream" in received
    sock.close()
    after = server.wait_idle()["counters"]
    assert after["cancelled"] - before.get("cancelled", 0) == 1
    decoded = after["tokens_decoded"] - before["tokens_decoded"]
    assert 1 <= decoded < length, (decoded, length)  # greedy: a stream left to run decodes exactly `length`


def test_raw_stream_is_server_sent_events_ending_with_done(server):
    with httpx.stream("POST", server.url + CHAT, headers=AUTH, json=chat_body(max_tokens=5, stream=True),
                      timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"][0]["finish_reason"] == "length" and "usage" not in last


def test_a_client_that_hangs_up_mid_upload_is_let_go(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: "
                     "application/json\r\nContent-Length: 100000\r\n\r\n{\"messages\": ".encode())
        time.sleep(0.2)
    time.sleep(0.5)
    assert server.health()["status"] == "ready"
    assert "Traceback" not in server.output()  # nothing to answer and nothing to log


def test_still_serving_after_every_error(server):
    response = httpx.post(server.url + IMAGES, headers=AUTH, json={"prompt": "a cat", "steps": 1, "seed": 0},
                          timeout=60)
    assert response.status_code == 200 and len(response.json()["data"]) == 1
    jpeg = chat_body(png_url(fmt="JPEG"), max_tokens=3)  # a JPEG is as welcome as a PNG
    answer = httpx.post(server.url + CHAT, headers=AUTH, json=jpeg, timeout=60).json()
    assert answer["usage"]["completion_tokens"] == 3 and answer["choices"][0]["finish_reason"] == "length"
    assert server.health()["status"] == "ready"
    assert "Traceback" not in server.output()  # every refusal above was an answer, not a crash
