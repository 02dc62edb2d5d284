"""
The search service on a real server (uvicorn on 127.0.0.1, a free port) over a catalogue of the
synthetic split's shop photos: the API on consumer photos, the same answer as tools/search.py,
every kind of bad input answered with a 4xx and one line (the service keeps serving), concurrent
clients, and the page in a real browser (Debian's Chromium, driven by Selenium).
"""

import http.client
import json
import os
import select
import shutil
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from _common import multipart
from conftest import one_line_error, script_module

from deepfashion2 import compat
from deepfashion2.apps.catalogue import index_images

pytestmark = pytest.mark.slow
POLICY = "min_score=0&max_garments=3&top_k=5"  # a random-weight model: every score is low


@pytest.fixture(scope="module")
def server(catalogue_setup):

    from deepfashion2.apps.serve import create_app

    cfg, shop, users, tmp = catalogue_setup
    # the shop folder with a file whose name is not UTF-8 (any bytes but / are a Linux name)
    shop_copy = str(tmp / "served_shop")
    shutil.copytree(shop, shop_copy)
    first = sorted(os.listdir(shop_copy))[0]
    os.rename(os.path.join(shop_copy, first), os.path.join(os.fsencode(shop_copy), b"caf\xe9.jpg"))
    shop = shop_copy
    cat = str(tmp / "served")
    index_images(cfg, shop, cat, progress=False)
    srv, thread, port = _start(create_app(cat, max_upload_bytes=2 << 20))
    yield {"port": port, "catalogue": cat, "users": users, "cfg": cfg, "shop": shop}
    srv.should_exit = True
    thread.join(timeout=10)


def _request(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if path.startswith("/items/") and r.status == 200:  # a browser takes the type we say
        assert r.getheader("x-content-type-options") == "nosniff", path
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
        (_oversize(port, 3 << 20, chunked=False)[:2], 413, "upload over"),
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


def test_the_command_refuses_other_weights_at_start_up(server, tmp_path, capsys):
    import torch

    state = torch.load(server["cfg"].MODEL.WEIGHTS, weights_only=True)
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key] + 1
    other = tmp_path / "other.pth"
    torch.save(state, other)
    tool = script_module("tools/serve.py")
    line = one_line_error(capsys, tool.main, ["--catalogue", server["catalogue"],
                                              "MODEL.WEIGHTS", str(other)])  # fmt: skip
    assert "was built with weights" in line


def _oversize(port, total: int, chunked: bool, piece: int = 64 * 1024):
    """
    Upload ``total`` bytes as a client that keeps sending until the server answers: (status,
    body, bytes it managed to send). With a ``Content-Length``, the answer is awaited before the
    body is sent (as a client that honours ``Expect``-style early answers does).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    sock.sendall(head.encode())
    sent, answer = 0, b""
    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
    try:
        while sent < total and not select.select([sock], [], [], 0 if chunked else 5)[0]:
            block = (part if sent == 0 else b"") + b"\xff" * piece
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            sent += piece
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut off: the answer came before it
    try:
        while data := sock.recv(65536):
            answer += data
    except ConnectionResetError:  # the unread rest of the upload resets the connection
        pass
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, json.loads(body or b"{}"), sent


def test_an_upload_over_the_cap_is_cut_off_whatever_its_encoding(server):
    """A chunked upload (no Content-Length) is counted as it arrives: 413 once past the cap
    (2 MiB here), and the client is cut off long before it has sent its 64 MiB."""
    status, body, sent = _oversize(server["port"], 64 << 20, chunked=True)
    assert status == 413 and "upload over" in body["error"], (status, body)
    assert sent < 24 << 20
    status, body, sent = _oversize(server["port"], 64 << 20, chunked=False)
    assert status == 413 and sent == 0  # answered from the header, before any of the body
    status, _, _ = _request(server["port"], "GET", "/healthz")
    assert status == 200


def test_the_body_guard_reads_at_most_the_cap_plus_one_read():
    """The ASGI guard alone: an endless body of 1 MiB reads stops after cap / 1 MiB + 1 reads,
    and a body that stalls is answered 408."""
    import asyncio

    from deepfashion2.apps.serve.guard import BodyGuard

    async def app(scope, receive, send):  # reads the whole body, as a form parser does
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("an endless body ended")

    async def run(receive, **kw):
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/search", "headers": []}
        await BodyGuard(app, max_bytes=4 << 20, **kw)(scope, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])["error"]

    reads = []

    async def endless():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}

    assert asyncio.run(run(endless)) == (413, "upload over 4194304 bytes")
    assert len(reads) == 5

    async def stalls():
        await asyncio.sleep(10)

    status, error = asyncio.run(run(stalls, read_timeout=0.2))
    assert status == 408 and "stalled" in error


def test_a_client_slow_with_its_headers_is_cut_off(server, monkeypatch):
    """Slowloris: headers trickled byte by byte are cut off at the header deadline."""
    import uvicorn

    from deepfashion2.apps.serve import create_app
    from deepfashion2.apps.serve.guard import HeaderTimeoutProtocol

    monkeypatch.setattr(HeaderTimeoutProtocol, "header_timeout", 1.0)
    port = compat.free_port()
    app = create_app(server["catalogue"])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        http=HeaderTimeoutProtocol))  # fmt: skip
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(300):
            if srv.started:
                break
            time.sleep(0.05)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        t0, closed = time.monotonic(), False
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                if select.select([sock], [], [], 0)[0] and sock.recv(1) == b"":
                    closed = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        sock.close()
        assert closed and time.monotonic() - t0 < 5
        # an honest client on a kept-alive connection is served twice
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(2):
            conn.request("GET", "/healthz")
            assert conn.getresponse().read()
        conn.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_a_name_that_is_not_utf8_is_served_and_shown_escaped(server):
    port = server["port"]
    query = "min_score=0&max_garments=1&top_k=1000&all_categories=true"
    status, answer = search(port, open(server["users"][0], "rb").read(), query)
    assert status == 200
    names = {m["image"]: m["item"] for g in answer["garments"] for m in g["matches"]}
    escaped = "caf\\xe9.jpg"  # its bytes, escaped
    assert escaped in names
    status, ctype, data = _request(port, "GET", f"/items/{names[escaped]}/image")
    assert status == 200 and ctype == "image/jpeg"
    assert data == open(os.path.join(os.fsencode(server["shop"]), b"caf\xe9.jpg"), "rb").read()


def test_only_the_images_that_were_indexed_are_served(server, tmp_path):
    """
    A hostile catalogue (made with the library, so its manifests are right) whose items are a link
    to /etc/passwd, an HTML file named as an image, a forged huge box, or whose recorded image
    folder is /etc: none of them is served, and a wrong folder is refused at start-up.
    """
    from deepfashion2.apps.catalogue.embed import UnreadableImageError, image_type
    from deepfashion2.apps.serve import create_app
    from deepfashion2.apps.serve.app import _crop
    from deepfashion2.retrieval import Catalogue, CatalogueError

    shop = tmp_path / "shop"
    shutil.copytree(server["shop"], shop)
    e = Catalogue(server["catalogue"]).entries()
    config = open(os.path.join(server["catalogue"], "config.yaml")).read()
    identity = Catalogue(server["catalogue"]).identity

    def hostile(name, images, sizes=None):
        cat = Catalogue.create(str(tmp_path / name), identity, config, images_root=str(shop))
        dets = [(np.array([[0, 0, 1e9, 1e9]]), np.array([int(e.categories[0])]), np.array([0.9]),
                 e.embeddings[:1]) for _ in images]  # fmt: skip
        cat.add(images, dets, image_bytes=sizes)
        return cat

    (shop / "page.jpg").write_text("<html><script>alert(1)</script></html>")
    hostile("html", [e.images[0], "page.jpg"])
    service = create_app(str(tmp_path / "html")).state.service
    rows = {service.entries.images[i]: r for r, i in enumerate(service.entries.image)}
    with pytest.raises(UnreadableImageError, match="not an image"):
        image_type(service.item_path(rows["page.jpg"]))  # so /items/{id}/image answers 404
    crop = _crop(service.item_path(rows[e.images[0]]), [0, 0, 1e9, 1e9])  # clipped, no bomb
    assert crop[:2] == b"\xff\xd8"
    # images.json refuses "../"; a link inside the folder to a file outside it is the way round
    os.symlink("/etc/passwd", shop / "passwd.jpg")
    cat = hostile("link", ["passwd.jpg"], [os.path.getsize("/etc/passwd")])
    with pytest.raises(CatalogueError, match="does not hold this catalogue's image passwd.jpg"):
        create_app(str(tmp_path / "link"))
    assert cat.image_path(os.path.realpath(shop), 0) is None
    # the recorded image folder changed to /etc: refused at start-up, in one line, by name
    meta = json.load(open(tmp_path / "html" / "catalogue.json"))
    json.dump({**meta, "images_root": "/etc"}, open(tmp_path / "html" / "catalogue.json", "w"))
    with pytest.raises(CatalogueError, match="^/etc: does not hold this catalogue's image"):
        create_app(str(tmp_path / "html"))


def _start(app):
    import uvicorn

    port = compat.free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(300):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    return srv, thread, port


def test_products_filters_and_removals_reach_a_running_service(server, tmp_path, capsys):
    """A products file, a filter in the query, a bad filter (400, one line), and a removal made
    by tools/index_catalogue.py while the service runs: gone from its answers and its images
    within a second, without a restart."""
    from deepfashion2.apps.serve import create_app
    from deepfashion2.retrieval import Catalogue

    cat = str(tmp_path / "cat")
    shutil.copytree(server["catalogue"], cat)
    # a products file is UTF-8: the image whose name is not stays its own product
    images = [p for p in Catalogue(cat).entries().images if p.isprintable() and p.isascii()]
    # P0: the first two photos; then one product per photo, two in three available
    rows = [f"{img},P{p},{p},{'true' if p % 3 else 'false'}"
            for p, img in ((max(i - 1, 0), img) for i, img in enumerate(images))]  # fmt: skip
    products = tmp_path / "products.csv"
    products.write_text("image,product,price,available\n" + "\n".join(rows) + "\n")
    tool = script_module("tools/index_catalogue.py")
    tool.main(["--output", cat, "--products", str(products)])
    srv, thread, port = _start(create_app(cat))
    try:
        photo = open(server["users"][0], "rb").read()
        query = "min_score=0&max_garments=2&top_k=5&all_categories=true"
        status, answer = search(port, photo, query)
        assert status == 200
        matches = [m for g in answer["garments"] for m in g["matches"]]
        for m in matches:  # the photo without a row is its own product, without fields
            fields = {"id", "price", "available"} if m["image"] in images else {"id"}
            assert set(m["product"]) == fields
        for g in answer["garments"]:
            ids = [m["product"]["id"] for m in g["matches"]]
            assert len(ids) == len(set(ids)) == 5
        status, filtered = search(port, photo, query + "&filter=available%20%3D%3D%20true")
        got = [m for g in filtered["garments"] for m in g["matches"]]
        assert status == 200 and len(got) == len(matches)  # k results, all satisfying it
        assert all(m["product"]["available"] is True for m in got)
        status, bad = search(port, photo, query + "&filter=colour%20%3D%3D%20red")
        assert status == 400 and bad["error"].startswith("filter: unknown field 'colour'")
        # sold out while serving: removed by the tool, gone without a restart
        best = next(m for m in answer["garments"][0]["matches"] if m["image"] in images)
        (tmp_path / "sold.txt").write_text(best["product"]["id"] + "\n")
        tool.main(["--output", cat, "--remove", str(tmp_path / "sold.txt")])
        time.sleep(1.1)  # the service looks at most once a second
        status, after = search(port, photo, query)
        assert status == 200
        assert best["product"]["id"] not in {
            m["product"]["id"] for g in after["garments"] for m in g["matches"]
        }
        assert len(after["garments"][0]["matches"]) == 5
        status, _, _ = _request(port, "GET", f"/items/{best['item']}/image")
        assert status == 404
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    capsys.readouterr()
