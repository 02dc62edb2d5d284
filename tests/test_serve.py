"""
The search service on a real server (uvicorn on 127.0.0.1, a free port) over a catalogue of the
synthetic split's shop photos: the API on consumer photos, the same answer as tools/search.py,
every kind of bad input answered with a 4xx and one line (the service keeps serving), concurrent
clients, and the page in a real browser (Debian's Chromium, driven by Selenium).
"""

import http.client
import json
import os
import struct
import threading
import time
import zlib

import pytest
from _common import multipart
from conftest import script_module

from deepfashion2 import compat
from deepfashion2.apps.catalogue import index_images

pytestmark = pytest.mark.slow
POLICY = "min_score=0&max_garments=3&top_k=5"  # a random-weight model: every score is low


@pytest.fixture(scope="module")
def server(catalogue_setup):
    import uvicorn

    from deepfashion2.apps.serve import create_app

    cfg, shop, users, tmp = catalogue_setup
    cat = str(tmp / "served")
    index_images(cfg, shop, cat, progress=False)
    port = compat.free_port()
    app = create_app(cat, max_upload_bytes=2 << 20)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(300):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield {"port": port, "catalogue": cat, "users": users, "cfg": cfg}
    srv.should_exit = True
    thread.join(timeout=10)


def _request(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("content-type", ""), data


def search(port, data: bytes, query=POLICY, field="image"):
    body, headers = multipart(field, data)
    status, _, out = _request(port, "POST", f"/search?{query}", body, headers)
    return status, json.loads(out)


def test_the_api_searches_a_consumer_photo(server):
    port = server["port"]
    status, _, health = _request(port, "GET", "/healthz")
    assert status == 200 and json.loads(health)["items"] > 0
    photo = open(server["users"][0], "rb").read()
    status, answer = search(port, photo)
    assert status == 200 and answer["garments"], answer
    assert set(answer["image"]) == {"width", "height"}
    for g in answer["garments"]:
        assert set(g) == {"box", "category", "category_name", "score", "matches"}
        assert 0 < len(g["matches"]) <= 5
        for m in g["matches"]:
            assert set(m) >= {"item", "image", "box", "category", "score", "similarity"}
            assert -1 <= m["similarity"] <= 1
            status, ctype, data = _request(port, "GET", f"/items/{m['item']}/crop")
            assert status == 200 and ctype == "image/jpeg" and data[:2] == b"\xff\xd8"
            status, _, data = _request(port, "GET", f"/items/{m['item']}/image")
            assert (
                status == 200 and data == open(os.path.join(_root(server), m["image"]), "rb").read()
            )
    status, _, page = _request(port, "GET", "/")
    assert status == 200 and b"Shop the look" in page
    status, _, spec = _request(port, "GET", "/openapi.json")
    assert status == 200 and "/search" in json.loads(spec)["paths"]


def _root(server) -> str:
    return json.load(open(os.path.join(server["catalogue"], "catalogue.json")))["images_root"]


def test_the_service_answers_as_the_command_line_does(server, capsys):
    port, photo = server["port"], server["users"][1]
    _, answer = search(port, open(photo, "rb").read())
    tool = script_module("tools/search.py")
    result = tool.main(["--catalogue", server["catalogue"], "--input", photo, "--json",
                        "--min-score", "0", "--max-garments", "3", "--top-k", "5"])  # fmt: skip
    capsys.readouterr()
    cli = result["results"][0]["garments"]
    assert len(cli) == len(answer["garments"]) > 0
    for a, b in zip(answer["garments"], cli):
        assert a["category"] == b["category"] and a["box"] == pytest.approx(b["box"], abs=1e-3)
        assert [m["item"] for m in a["matches"]] == [m["item"] for m in b["matches"]]
        assert [m["image"] for m in a["matches"]] == [m["image"] for m in b["matches"]]


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bad_input_gets_a_4xx_and_one_line_and_the_service_keeps_serving(server):
    port = server["port"]
    photo = open(server["users"][0], "rb").read()
    cases = [
        (search(port, b"not an image at all"), 400, "not an image"),
        (search(port, photo[: len(photo) // 2]), 400, "cannot decode"),
        (search(port, b""), 400, "empty upload"),
        (search(port, _png_header(100_000, 100_000)), 400, "pixels"),
        (search(port, photo, field="picture"), 400, "multipart field 'image'"),
        (search(port, b"\xff" * (3 << 20)), 413, "upload over"),
        (search(port, photo, query="top_k=0"), 422, "top_k"),
        (search(port, photo, query="top_k=10000000000000"), 422, "top_k"),
        (search(port, photo, query="min_score=nan"), 422, "min_score"),
    ]
    for (status, body), want_status, words in cases:
        assert status == want_status and words in body["error"], (status, body)
        assert "\n" not in body["error"] and set(body) == {"error"}
    for path in [
        "/items/999999/image", "/items/-1/crop", "/items/..%2F..%2Fetc%2Fpasswd/image",
        "/items//etc/passwd/image", "/items/1/../../../../etc/passwd", "/static/../../etc/passwd",
    ]:  # fmt: skip
        status, ctype, data = _request(port, "GET", path)
        assert status in (404, 422), path  # no such item, or not an item id
        assert b"root:" not in data and "json" in ctype and b'"error"' in data
    status, body = search(port, photo)  # and the next request is served normally
    assert status == 200 and body["garments"]


def test_concurrent_clients_are_all_served_with_the_same_answers(server):
    port = server["port"]
    photos = [open(p, "rb").read() for p in server["users"][:2]]
    alone = [search(port, p)[1] for p in photos]
    results = [None] * 4

    def client(i):
        results[i] = search(port, photos[i % 2])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    status, _, _ = _request(port, "GET", "/healthz")  # served while searches queue
    assert status == 200
    for t in threads:
        t.join(timeout=300)
    for i, (status, body) in enumerate(results):
        assert status == 200 and body == alone[i % 2]


def test_the_page_in_a_real_browser(server, tmp_path):
    import _browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    why = _browser.missing()
    if why:
        pytest.skip(why)
    browser = _browser.chrome()
    try:
        url = f"http://127.0.0.1:{server['port']}/"
        results = _browser.search_on_page(browser, url, server["users"][0], min_score="0")
        assert browser.execute_script("return document.getElementById('photo').width") > 0
        assert browser.find_elements(By.CSS_SELECTOR, ".garment") and results
        results[0].click()  # the shop photo opens
        WebDriverWait(browser, 30).until(
            lambda b: b.execute_script(
                "const v = document.getElementById('viewer'); "
                "return v.style.display === 'flex' && document.getElementById('viewer-img')"
                ".naturalWidth > 0")
        )  # fmt: skip
        browser.find_element(By.ID, "viewer").click()
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()


def test_the_command_refuses_other_weights_at_start_up(server, tmp_path):
    import torch

    state = torch.load(server["cfg"].MODEL.WEIGHTS, weights_only=True)
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key] + 1
    other = tmp_path / "other.pth"
    torch.save(state, other)
    tool = script_module("tools/serve.py")
    with pytest.raises(SystemExit) as e:
        tool.main(["--catalogue", server["catalogue"], "MODEL.WEIGHTS", str(other)])
    assert "was built with weights" in str(e.value.code) and "\n" not in str(e.value.code)
