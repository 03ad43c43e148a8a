"""A web page can't drive the local API: DNS rebinding (foreign Host) and cross-site posts are refused.

Real uvicorn on 127.0.0.1 with the tiny model; every request is real HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from test_api import KEY, _start


def _one_image(url: str, headers: dict[str, str] | None = None) -> int:
    r = requests.post(
        url + "/sdapi/v1/txt2img",
        json={"prompt": "misty lake", "steps": 1, "width": 64, "height": 64, "seed": 3},
        headers=headers,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    (image_id,) = json.loads(r.json()["info"])["gallery_ids"]
    return image_id


def test_dns_rebinding_and_cross_site_requests_are_refused(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    u, port = s.url, s.url.rsplit(":", 1)[1]
    try:
        image_id = _one_image(u)
        # A rebinding page reaches 127.0.0.1 under its own name: refused before any route runs.
        evil = {"Host": f"evil.example:{port}"}
        r = requests.delete(u + f"/api/v1/gallery/{image_id}", headers=evil, timeout=10)
        assert r.status_code == 421 and "evil.example" in r.json()["detail"]
        assert requests.get(u + "/api/v1/gallery", headers=evil, timeout=10).status_code == 421
        assert requests.get(u + "/health", headers=evil, timeout=10).status_code == 421
        assert requests.get(u + f"/api/v1/gallery/{image_id}", timeout=10).status_code == 200, "not deleted"
        # This machine's own names are fine.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", f"app.localhost:{port}"):
            assert requests.get(u + "/sdapi/v1/samplers", headers={"Host": host}, timeout=10).status_code == 200, host
        # A cross-site "simple" request (text/plain, no preflight) to interrupt: refused by its Origin ...
        r = requests.post(
            u + "/sdapi/v1/interrupt",
            data="x",
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
            timeout=10,
        )
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = requests.delete(u + f"/api/v1/gallery/{image_id}", headers={"Origin": "http://evil.example"}, timeout=10)
        assert r.status_code == 403
        # ... and by its body type even without an Origin.
        r = requests.post(u + "/sdapi/v1/interrupt", data="x", headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.status_code == 415
        r = requests.post(u + "/sdapi/v1/txt2img", data={"prompt": "x"}, timeout=10)  # a form post
        assert r.status_code == 415
        # The server's own pages (/docs) post with their own origin; A1111 clients post bare.
        assert requests.post(u + "/sdapi/v1/interrupt", headers={"Origin": u}, timeout=10).status_code == 200
        assert requests.post(u + "/sdapi/v1/interrupt", timeout=10).status_code == 200
        # GETs from a foreign origin are harmless (no CORS headers, so the page can't read them).
        r = requests.get(u + "/sdapi/v1/samplers", headers={"Origin": "https://evil.example"}, timeout=10)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert requests.get(u + f"/api/v1/gallery/{image_id}", timeout=10).status_code == 200
    finally:
        s.stop()


def test_allowed_host_and_auth(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    """--allowed-host adds a proxy's name; the Host check holds with auth too, and runs before it."""
    s = _start(tiny_sd, tiny_lora, isolated_home, api_keys=[KEY], allowed_hosts=["lanskap.studio.example"])
    u = s.url
    h = {"Authorization": f"Bearer {KEY}"}
    try:
        r = requests.get(u + "/sdapi/v1/samplers", headers={**h, "Host": "lanskap.studio.example"}, timeout=10)
        assert r.status_code == 200
        r = requests.get(u + "/sdapi/v1/samplers", headers={**h, "Host": "evil.example"}, timeout=10)
        assert r.status_code == 421
        assert requests.get(u + "/sdapi/v1/samplers", headers={"Host": "evil.example"}, timeout=10).status_code == 421
        r = requests.post(u + "/sdapi/v1/interrupt", headers={**h, "Origin": "https://evil.example"}, timeout=10)
        assert r.status_code == 403, "credentials don't make a cross-site post acceptable"
    finally:
        s.stop()


def test_cors_preflight_is_answered_before_auth(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    """A browser sends no credentials with a preflight: it must get CORS headers, not a 401."""
    studio = "https://studio.example"
    s = _start(tiny_sd, tiny_lora, isolated_home, api_keys=[KEY], cors_origins=[studio])
    u = s.url
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    try:
        r = requests.options(u + "/sdapi/v1/txt2img", headers={**preflight, "Origin": studio}, timeout=10)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == studio
        evil = {**preflight, "Origin": "https://evil.example"}
        r = requests.options(u + "/sdapi/v1/txt2img", headers=evil, timeout=10)
        assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
        # the configured origin's real request, with credentials, goes through
        creds = {"Origin": studio, "Authorization": f"Bearer {KEY}"}
        r = requests.post(u + "/sdapi/v1/interrupt", headers=creds, timeout=10)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == studio
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("host", "bind", "allowed", "ok"),
    [
        ("127.0.0.1:7861", "127.0.0.1", [], True),
        ("localhost", "127.0.0.1", [], True),
        ("[::1]:7861", "127.0.0.1", [], True),
        ("192.168.1.5:7861", "127.0.0.1", [], False),
        ("evil.example", "127.0.0.1", [], False),
        ("192.168.1.5:7861", "0.0.0.0", [], True),  # an address literal: nothing to rebind
        ("evil.example:7861", "0.0.0.0", [], False),
        ("gpu.lan:7861", "0.0.0.0", ["gpu.lan"], True),
        ("anything", "127.0.0.1", ["*"], True),
    ],
)
def test_host_rule(host: str, bind: str, allowed: list[str], ok: bool) -> None:
    from lanskap.api.security import ServeConfig, host_allowed

    assert host_allowed(host, ServeConfig(host=bind, allowed_hosts=allowed)) is ok


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header for a huge picture, with one tiny (truncated) data chunk: a few hundred bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _ztxt_bomb() -> bytes:
    """A small PNG whose zTXt chunk inflates to 50 MB."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    data = buf.getvalue()
    body = b"parameters\0\0" + zlib.compress(b"A" * 50_000_000, 9)
    ztxt = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    return data[:33] + ztxt + data[33:]  # after IHDR (8 + 25 bytes)


def test_png_info_bombs_get_a_4xx_and_health_stays_quick(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    import base64
    import threading
    import time

    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    u = s.url
    try:
        huge = base64.b64encode(_png_declaring(100_000, 100_000)).decode()
        r = requests.post(u + "/sdapi/v1/png-info", json={"image": huge}, timeout=10)
        assert r.status_code == 422 and "pixels" in r.json()["detail"]
        r = requests.post(u + "/sdapi/v1/png-info", json={"image": base64.b64encode(_ztxt_bomb()).decode()}, timeout=30)
        assert 400 <= r.status_code < 500, r.text
        r = requests.post(u + "/sdapi/v1/img2img", json={"prompt": "x", "init_images": [huge]}, timeout=10)
        assert r.status_code == 422 and "pixels" in r.json()["detail"]
        # Four large (but allowed) pictures at once: png-info reads headers only; /health answers meanwhile.
        big = base64.b64encode(_png_declaring(8000, 8000)).decode()
        codes: list[int] = []
        workers = [
            threading.Thread(
                target=lambda: codes.append(
                    requests.post(u + "/sdapi/v1/png-info", json={"image": big}, timeout=60).status_code
                )
            )
            for _ in range(4)
        ]
        for w in workers:
            w.start()
        slowest = 0.0
        for _ in range(10):
            t0 = time.perf_counter()
            assert requests.get(u + "/health", timeout=10).status_code == 200
            slowest = max(slowest, time.perf_counter() - t0)
        for w in workers:
            w.join(60)
        assert codes == [200] * 4 and slowest < 0.2, (codes, slowest)
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("GET", "/api/v1/gallery?offset=99999999999999999999", None, "less than or equal"),
        ("GET", "/api/v1/gallery?width=99999999999999999999", None, "less than or equal"),
        ("GET", "/api/v1/gallery/99999999999999999999", None, "less than or equal"),
        ("GET", "/api/v1/gallery/99999999999999999999/image", None, "less than or equal"),
        ("DELETE", "/api/v1/gallery/99999999999999999999", None, "less than or equal"),
        ("POST", "/api/v1/gallery/export", '{"ids": [99999999999999999999]}', "less than or equal"),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "cfg_scale": NaN}', "finite"),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "cfg_scale": Infinity}', "finite"),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "\\ud800", "steps": 1}', "not text"),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "override_settings": {"eta_noise_seed_delta": 1e400}}', "whole"),
        ("POST", "/sdapi/v1/txt2img", '{"prompt": "x", "scheduler": "Nope"}', "unknown schedule type"),
        ("POST", "/sdapi/v1/options", '{"CLIP_stop_at_last_layers": NaN}', "whole number"),
        ("POST", "/sdapi/v1/options", '{"jpeg_quality": NaN}', "NaN"),
        ("POST", "/sdapi/v1/png-info", '{"image": "!!!!"}', "not valid base64"),
        # the field is named once, not "init_images[0] init_images[0] is not an image"
        ("POST", "/sdapi/v1/img2img", '{"init_images": ["aGVsbG8="]}', '{"detail":"init_images[0] is not an image'),
    ],
)
def test_bad_input_is_a_4xx_never_a_5xx(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path, method: str, path: str, body: str | None, needle: str
) -> None:
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        r = requests.request(method, s.url + path, data=body, headers=headers, timeout=60)
        assert r.status_code == 422, r.text
        assert needle.lower() in r.text.lower(), r.text
        assert requests.get(s.url + "/sdapi/v1/options", timeout=10).status_code == 200, "nothing bad was stored"
        assert requests.head(s.url + "/health", timeout=10).status_code == 200
    finally:
        s.stop()


def test_failed_logins_are_throttled_and_weak_public_passwords_refused(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import time

    from conftest import assert_one_line_error, run_cli

    s = _start(tiny_sd, tiny_lora, isolated_home, basic_auth=[("ann", "s3cret-pass")], rate_per_minute=100_000)
    u = s.url + "/sdapi/v1/samplers"
    try:
        with caplog.at_level(logging.WARNING, logger="lanskap.access"):
            logging.getLogger("lanskap.access").addHandler(caplog.handler)  # it does not propagate
            codes = [requests.get(u, auth=("ann", f"guess{i}"), timeout=10).status_code for i in range(8)]
        assert codes[:6] == [401] * 6 and codes[6:] == [429, 429], codes
        r = requests.get(u, auth=("ann", "s3cret-pass"), timeout=10)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, "even the right password waits"
        assert any("failed login" in rec.getMessage() for rec in caplog.records)
        time.sleep(int(r.headers["retry-after"]) + 0.1)
        assert requests.get(u, auth=("ann", "s3cret-pass"), timeout=10).status_code == 200
        assert requests.get(u, auth=("ann", "wrong"), timeout=10).status_code == 401, "a success clears the record"
    finally:
        s.stop()
    proc = run_cli("serve", "--host", "0.0.0.0", "--api-auth", "ann:short")
    assert_one_line_error(proc, "password", "16 characters")


def test_the_schema_documents_every_answer_and_the_login(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    """Each operation lists the guard's refusals and its own errors; the 422 body matches its schema."""
    s = _start(tiny_sd, tiny_lora, isolated_home, api_keys=[KEY])
    h = {"Authorization": f"Bearer {KEY}"}
    try:
        spec = requests.get(s.url + "/openapi.json", headers=h, timeout=10).json()
        assert set(spec["components"]["securitySchemes"]) == {"apiKeyBearer", "apiKeyHeader", "basic"}
        assert {"basic": []} in spec["security"]
        for path, operations in spec["paths"].items():
            for method, op in operations.items():
                codes = set(op["responses"])
                assert {"401", "403", "413", "415", "421", "429"} <= codes, (method, path)
                if path.endswith(("txt2img", "img2img")) or (path.startswith("/api/v1/jobs/") and method == "post"):
                    assert {"500", "503"} <= codes or path.endswith("/cancel"), (method, path)
                if "{" in path:
                    assert "404" in codes or path.startswith("/sdapi"), (method, path)
        assert spec["paths"]["/health"]["get"]["security"] == []  # the one route that needs no login
        assert "head" in spec["paths"]["/health"]
        # Both kinds of 422 fit the documented body: a list of fields, or a sentence with settings.
        invalid = spec["components"]["schemas"]["Invalid"]["properties"]["detail"]["anyOf"]
        assert {"type": "string"} in invalid and any(a.get("type") == "array" for a in invalid)
        malformed = requests.post(s.url + "/sdapi/v1/txt2img", json={"steps": "many"}, headers=h, timeout=10)
        assert malformed.status_code == 422 and isinstance(malformed.json()["detail"], list)
        body = {"dataset": "nowhere", "name": "run", "resolution": 100}
        refused = requests.post(s.url + "/api/v1/jobs/training", json=body, headers=h, timeout=10)
        assert refused.status_code == 422 and isinstance(refused.json()["detail"], str)
    finally:
        s.stop()


def test_stored_logins_work_for_a1111_clients_and_removing_one_locks_it_out(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lanskap users`` logins (argon2 hashes on disk) are what ``serve`` checks; a removal acts at once."""
    import subprocess
    import sys

    import webuiapi

    from conftest import main_cli
    from lanskap.auth import store_at

    password = "a long enough passphrase"
    add = subprocess.run(
        [sys.executable, "-m", "lanskap.cli.main", "users", "add", "ann", "--password-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert add.returncode == 0, add.stderr
    made = main_cli(capsys, "users", "key", "tablet")
    assert made.returncode == 0 and made.stdout.startswith("lk_")
    key = made.stdout.strip()
    store = store_at(isolated_home)
    listing = main_cli(capsys, "users", "list").stdout
    assert "ann" in listing and "tablet" in listing and key[:7] in listing and key not in listing
    on_disk = store.path.read_text()
    assert password not in on_disk and key not in on_disk and "$argon2id$" in on_disk
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"

    s = _start(tiny_sd, tiny_lora, isolated_home, users=store, rate_per_minute=100_000, rate_burst=1000)
    try:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=int(s.url.rsplit(":", 1)[1]))
        api.set_auth("ann", password)
        assert "Euler a" in [x["name"] for x in api.get_samplers()]
        r = requests.get(s.url + "/sdapi/v1/samplers", auth=("ann", "a wrong but long passphrase"), timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        r = requests.get(s.url + "/sdapi/v1/samplers", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200
        assert main_cli(capsys, "users", "remove", "ann").returncode == 0
        assert requests.get(s.url + "/sdapi/v1/samplers", auth=("ann", password), timeout=30).status_code == 401
        assert main_cli(capsys, "users", "remove", "tablet").returncode == 0
        # The last login gone, the server stays locked rather than opening up.
        assert requests.get(s.url + "/sdapi/v1/samplers", timeout=30).status_code == 401
    finally:
        s.stop()


def test_four_big_pictures_at_once_stay_within_the_documented_memory_bound(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path
) -> None:
    """docs/security.md: extra memory ≤ (decode slots + jobs holding a picture) × w × h × 3 bytes × 1.25.

    Four img2img requests with a 4096² picture each (50 MB decoded) run at once: /health answers
    within 200 ms all along, and the server's memory grows by less than that bound.
    """
    import base64
    import io
    import threading
    import time

    import psutil
    from PIL import Image

    from lanskap.api.deps import DECODE_SLOTS

    side = 4096
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 160)).save(buf, format="PNG")  # small on the wire, 50 MB decoded
    picture = base64.b64encode(buf.getvalue()).decode()
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)
    proc = psutil.Process()  # the server runs in this process
    body = {"prompt": "x", "init_images": [picture], "steps": 1, "width": 64, "height": 64, "denoising_strength": 0.5}
    try:
        requests.post(s.url + "/sdapi/v1/img2img", json={**body, "init_images": [_small_png()]}, timeout=120)
        base = proc.memory_info().rss
        peak, done, codes = base, threading.Event(), []

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proc.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        posts = [
            threading.Thread(
                target=lambda: codes.append(
                    requests.post(s.url + "/sdapi/v1/img2img", json=body, timeout=300).status_code
                )
            )
            for _ in range(4)
        ]
        for t in posts:
            t.start()
        slowest = 0.0
        while any(t.is_alive() for t in posts):
            t0 = time.perf_counter()
            assert requests.get(s.url + "/health", timeout=10).status_code == 200
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.05)
        done.set()
        sampler.join()
    finally:
        s.stop()
    bound = (DECODE_SLOTS + 4) * side * side * 3 * 1.25
    grew = peak - base
    print(
        f"memory: +{grew / 2**20:.0f} MB at peak, bound {bound / 2**20:.0f} MB; slowest /health {slowest * 1000:.0f} ms"
    )
    assert codes == [200] * 4, codes
    assert slowest < 0.2, slowest
    assert grew < bound, (grew / 2**20, bound / 2**20)


def _small_png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 160)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_public_bind_is_allowed_once_a_stored_login_exists(isolated_home: Path) -> None:
    from lanskap.api.security import ServeConfig
    from lanskap.auth import store_at
    from lanskap.errors import LanskapError

    store = store_at(isolated_home)
    with pytest.raises(LanskapError, match="lanskap users add"):
        ServeConfig(host="0.0.0.0", users=store).check()
    store.add_user("ann", "a long enough passphrase")
    assert ServeConfig(host="0.0.0.0", users=store).check().auth_enabled
    with pytest.raises(LanskapError, match="16 characters"):
        store.add_user("bob", "short one")
