"""The guardian's page refuses what it must, against the real server of real node processes (n = 2, k = 2).

Loopback by default (and a non-loopback address without HTTPS refused; with cert and key, HTTPS and a
Secure cookie); a login link that works once and
becomes an HttpOnly, SameSite=Strict cookie, the browser sent on to an address without the token; a CSRF
token on every POST; the security headers on every answer; no inline script or style, no third-party
asset; oversized uploads, another guardian's backup, mismatched or wrong passphrases refused with one
line; no secret in a page or a log; no temporary file left in the data directory. Last, the decryption
page of a session that decrypted the tally.
"""

from __future__ import annotations

import http.client
import re
import secrets
import shutil
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from node.custody.backup_file import read_backup
from node.page.app import MAX_UPLOAD
from node.testing.processes import eventually, guardian, node_env
from page_nodes import login_link
from test_ceremony_nodes import completes, make_cluster, propose, start_cluster, wait_status, write_election
from test_record_flow import VALID, plaintext_line

pytestmark = pytest.mark.slow
PASSPHRASE = "a backup passphrase never stored"
HEADERS = {"content-security-policy": None, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "cache-control": "no-store"}


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status, self.headers, self.body = response.status, response.headers, response.read()

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    @property
    def error(self) -> str:
        """The one-line refusal the page shows."""
        found = re.search(r'<p class="error"[^>]*>Refused: ([^<]*)</p>', self.text)
        assert found, (self.status, self.text[:2000])
        return found.group(1).replace("&#39;", "'").replace("&quot;", '"')


class Browser:
    """A browser's view of one node's page: its cookie, kept by hand so each test sees every header."""

    def __init__(self, node) -> None:
        self.node = node
        self.cookie: str | None = None
        status = trio.run(node.status)
        self.base = status["serving"]["page"]
        url = urlsplit(self.base)
        self.host, self.port = url.hostname, url.port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            connection.request(method, path, body=body, headers=headers)
            return Answer(connection.getresponse())
        finally:
            connection.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def login(self) -> Answer:
        link = urlsplit(login_link(self.node))
        answer = self.get(f"{link.path}?{link.query}")
        assert answer.status == 303, (answer.status, answer.text[:500])
        self.cookie = answer.headers["set-cookie"].split(";")[0]
        return answer

    def csrf(self, path: str = "/") -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.get(path).text).group(1)

    def post(self, path: str, fields: dict, files: dict | None = None) -> Answer:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        for name, (filename, data) in (files or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


@pytest.fixture(scope="module")
def two():
    cluster, nodes = make_cluster(["g1", "g2"])
    with cluster:
        start_cluster(cluster, nodes)
        session = trio.run(propose, nodes[0], write_election(cluster.base, 2))
        trio.run(wait_status, nodes, session, "proposed")
        yield cluster, nodes, session


def proposed(nodes, session) -> bool:
    return all(c["status"] == "proposed" for node in nodes for c in trio.run(node.request, "ceremony-status")
               if c["session"] == session)


def secrets_absent(node, *values: str) -> None:
    """None of `values` in any file of the node's directory (its log and output, its database, ...)."""
    for path in node.dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in values:
                assert value.encode() not in data, f"a secret is in {path}"
    leftovers = [p.name for p in node.dir.iterdir() if p.name.startswith(".page-")]
    assert leftovers == [], leftovers


# --- in order: these tests share one cluster and build on each other's state -------------------------------


def test_the_page_is_on_loopback_by_default_and_refused_off_it_without_https(two):
    cluster, nodes, _ = two
    assert Browser(nodes[0]).base.startswith("http://127.0.0.1:")
    off = cluster.base / "off-loopback.toml"
    off.write_text(nodes[0].config.read_text().replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:0"'))
    result = guardian("run", "--config", off, "--passphrase-env", "GUARDIAN_TEST_PASSPHRASE")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "[page]: listen '0.0.0.0' is not loopback" in result.stderr, result.stderr
    status = guardian("status", "--config", nodes[0].config)
    assert f"page at {Browser(nodes[0]).base}  (log in with `guardian page`)" in status.stdout, status.stdout


def test_guardian_page_opens_the_link_or_says_the_page_is_off(two):
    cluster, nodes, _ = two
    opened = cluster.base / "opened.txt"
    script = f"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])"
    browser = f"{sys.executable} -c {script!r} %s"
    result = guardian("page", "--config", nodes[0].config, "--open", env=node_env(BROWSER=browser))
    assert result.returncode == 0, result.stderr
    assert eventually_text(opened) == result.stdout.strip()
    assert Browser(nodes[0]).get(urlsplit(opened.read_text()).path + "?" + urlsplit(opened.read_text()).query) \
        .status == 303
    off = nodes[0].dir / "page-off.toml"
    off.write_text(nodes[0].config.read_text().replace("enabled = true", "enabled = false"))
    result = guardian("page", "--config", off)
    assert result.returncode == 1 and "[page]: enabled = false; set it to true and restart the node" in result.stderr


def eventually_text(path: Path) -> str:
    """The text the browser command wrote (it runs in the background)."""
    async def written():
        assert path.exists() and path.read_text()
        return path.read_text()
    return trio.run(eventually, written, 10, f"{path} written")


def test_the_login_link_works_once_and_becomes_a_strict_httponly_cookie(two):
    _, nodes, _ = two
    page = Browser(nodes[0])
    assert page.get("/").status == 403 and "not logged in" in page.get("/").error
    link = urlsplit(login_link(nodes[0]))
    answer = page.get(f"{link.path}?{link.query}")
    assert answer.status == 303 and answer.headers["location"] == "/"        # the token leaves the address bar
    cookie = answer.headers["set-cookie"]
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes, cookie
    page.cookie = cookie.split(";")[0]
    assert page.get("/").status == 200

    replay = Browser(nodes[0])
    again = replay.get(f"{link.path}?{link.query}")
    assert again.status == 403 and "was used already" in again.error and "set-cookie" not in again.headers
    wrong = replay.get(f"/login?token={secrets.token_urlsafe(32)}")
    assert wrong.status == 403 and "not valid" in wrong.error
    assert replay.get("/login").status == 403
    replay.cookie = f"{page.cookie.split('=')[0]}={secrets.token_urlsafe(32)}"     # a made-up session
    assert replay.get("/custody").status == 403
    assert replay.get("/custody/certificate.json").status == 403
    # The session of one node's page is not a session on another's.
    other = Browser(nodes[1])
    other.cookie = page.cookie
    assert other.get("/").status == 403
    secrets_absent(nodes[0], link.query.removeprefix("token="), page.cookie.split("=", 1)[1])


def test_every_answer_carries_the_security_headers_and_no_inline_script_or_third_party_asset(two):
    _, nodes, _ = two
    page = Browser(nodes[0])
    page.login()
    answers = {path: page.get(path) for path in ("/", "/ceremony", "/custody", "/decryption", "/audit",
                                                 "/static/page.css", "/static/page.js", "/no-such-page")}
    answers["/login?token=x"] = page.get("/login?token=x")
    for path, answer in answers.items():
        for name, value in HEADERS.items():
            assert answer.headers.get(name) is not None and (value is None or answer.headers[name] == value), \
                (path, name, dict(answer.headers))
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, policy
    assert answers["/no-such-page"].status == 404 and answers["/no-such-page"].error == "no such page"
    for path in ("/", "/ceremony", "/custody", "/decryption", "/audit"):
        html = answers[path].text
        assert answers[path].status == 200, path
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
        assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts), path
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html), path
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', html):
            assert url == "" or (url.startswith("/") and not url.startswith("//")), (path, url)


def test_a_post_without_the_sessions_csrf_token_is_refused_and_does_nothing(two):
    _, nodes, session = two
    page, intruder = Browser(nodes[0]), Browser(nodes[0])
    page.login()
    intruder.login()
    token = page.csrf("/ceremony")
    for fields in ({"session": session}, {"session": session, "csrf": "x" * len(token)},
                   {"session": session, "csrf": intruder.csrf("/ceremony")}):
        answer = page.post("/ceremony/accept", fields)
        assert answer.status == 403 and "security token is missing or wrong" in answer.error, fields
    no_session = Browser(nodes[0])
    assert no_session.post("/ceremony/accept", {"session": session, "csrf": token}).status == 403
    no_length = page.request("POST", "/ceremony/accept", None, {"Transfer-Encoding": "chunked"})
    assert no_length.status == 411 and "says not how long" in no_length.error
    assert proposed(nodes, session)
    assert trio.run(nodes[0].request, "ceremony-show")["votes"] == {}


def test_the_page_accepts_the_proposal_as_the_cli_would(two):
    _, nodes, session = two
    for node in nodes:
        page = Browser(node)
        page.login()
        empty = page.post("/ceremony/reject", {"session": session, "csrf": page.csrf("/ceremony")})
        assert empty.status == 400 and empty.error == "say why you reject the proposal"
        answer = page.post("/ceremony/accept", {"session": session, "csrf": page.csrf("/ceremony")})
        assert answer.status == 303 and answer.headers["location"] == "/ceremony"
        assert "You accepted the proposal" in page.get("/ceremony").text
    trio.run(completes, nodes, session)


def test_custody_refusals_each_name_what_was_wrong(two):
    _, nodes, session = two
    pages = [Browser(n) for n in nodes]
    for page in pages:
        page.login()
    g1, g2 = pages
    differ = g1.post("/custody/export", {"csrf": g1.csrf("/custody"), "passphrase": PASSPHRASE,
                                         "passphrase2": PASSPHRASE + "!"})
    assert differ.status == 400 and differ.error == "the two passphrases differ: type the same one twice"
    assert trio.run(nodes[0].request, "custody-status")["steps"] == {}
    short = g1.post("/custody/export", {"csrf": g1.csrf("/custody"), "passphrase": "short", "passphrase2": "short"})
    assert short.status == 400 and "passphrase" in short.error

    backups = {}
    for node, page in zip(nodes, pages):
        answer = page.post("/custody/export", {"csrf": page.csrf("/custody"), "passphrase": PASSPHRASE,
                                               "passphrase2": PASSPHRASE})
        assert answer.status == 200, answer.text[:2000]
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"] == f'attachment; filename="{node.name}-{session[:16]}.backup"'
        backups[node.name] = answer.body
        path = node.dir.parent / f"{node.name}.backup"
        path.write_bytes(answer.body)
        fingerprint = read_backup(path).fingerprint()
        assert fingerprint in page.get("/custody").text         # shown to read aloud
        confirm = page.post("/custody/confirm", {"csrf": page.csrf("/custody"), "copies": "1"})
        assert confirm.status == 400 and "keep more than one" in confirm.error
        words = page.post("/custody/confirm", {"csrf": page.csrf("/custody"), "copies": "two"})
        assert words.status == 400 and words.error == "the number of copies must be a whole number, not 'two'"
        assert page.post("/custody/confirm", {"csrf": page.csrf("/custody"), "copies": "2"}).status == 303

    def verify(page, data: bytes, passphrase: str = PASSPHRASE) -> Answer:
        return page.post("/custody/verify", {"csrf": page.csrf("/custody"), "passphrase": passphrase},
                         {"file": ("my copy.backup", data)})

    big = verify(g1, b"\0" * (MAX_UPLOAD + 2**20))
    assert big.status == 413 and "more than the 4 MiB allowed" in big.error
    other = verify(g1, backups["g2"])
    assert other.status == 400 and "holds the key of guardian 'g2'" in other.error and "not this node's" in other.error
    wrong = verify(g1, backups["g1"], PASSPHRASE + "?")
    assert wrong.status == 400 and "passphrase" in wrong.error
    none = g1.post("/custody/verify", {"csrf": g1.csrf("/custody"), "passphrase": PASSPHRASE})
    assert none.status == 400 and none.error == "choose (or drop) the backup file to verify"
    assert not trio.run(nodes[0].request, "custody-status")["table"]["g1"]["verified"]

    for name, page in zip(backups, pages):
        answer = verify(page, backups[name])
        assert answer.status == 303, answer.text[:2000]
        assert "restores exactly your key" in page.get("/custody").text
    for page in pages:
        text = page.get("/custody").text
        assert 'id="custody-complete"' in text or "being signed" in text
    for node in nodes:
        secrets_absent(node, PASSPHRASE)
    for page in pages:
        for path in ("/", "/ceremony", "/custody", "/audit"):
            assert PASSPHRASE not in page.get(path).text


def test_the_decryption_page_shows_the_session_and_the_decrypted_tally(two):
    cluster, nodes, session = two
    base = cluster.base

    async def certified():
        assert (await nodes[0].request("custody-status"))["certificate"]
    trio.run(eventually, certified, 30, "the certificate signed by both")
    record = base / "record"
    shutil.copytree(nodes[0].dir / "ceremonies" / session, record)
    (base / "plain.jsonl").write_text("\n".join(plaintext_line(i, p) for i, p in VALID[:2]) + "\n")
    for args in (("encrypt", "--election", record, "--ballots", base / "plain.jsonl", "--device", "booth-1",
                  "--out", base / "enc"),
                 ("ballots", "submit", "--record", record, "--cast", *[base / "enc" / f"{i}.json" for i, _ in VALID[:2]]),
                 ("tally", "--record", record),
                 ("decrypt", "--record", record, "--config", nodes[0].config)):
        result = guardian(*args, timeout=300)
        assert result.returncode == 0, (args, result.stderr)
    (done,) = trio.run(nodes[1].request, "decrypt-status")
    assert done["status"] == "complete" and done["outcome"]["tally"], done
    page = Browser(nodes[1])
    page.login()
    html = page.get("/decryption").text
    assert f"Session <code>{done['session'][:16]}</code>" in html and "Complete in 1 round(s): present g1, g2" in html
    for contest, options in done["outcome"]["tally"].items():
        assert f"<caption>{contest}</caption>" in html
        for option, count in options.items():
            assert f'<tr><td>{option}</td><td class="count">{count}</td></tr>' in html, (option, count)


def test_with_cert_and_key_the_page_is_https_and_its_cookie_secure(cluster):
    import ssl

    import trustme

    (node,) = cluster.init_nodes(["p1"])
    cluster.write_roster([node])
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(node.dir / "page-key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(node.dir / "page-cert.pem"))
    text = node.config.read_text()
    plain = 'listen = "127.0.0.1:0"\ncert = ""\nkey = ""'
    assert plain in text
    node.config.write_text(text.replace(plain, 'listen = "127.0.0.1:0"\ncert = "page-cert.pem"\nkey = "page-key.pem"'))
    trio.run(cluster.start, node)
    link = urlsplit(login_link(node, "https"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    connection = http.client.HTTPSConnection(link.hostname, link.port, context=context, timeout=30)
    try:
        connection.request("GET", f"{link.path}?{link.query}")
        answer = Answer(connection.getresponse())
    finally:
        connection.close()
    assert answer.status == 303
    assert "secure" in {a.strip().lower() for a in answer.headers["set-cookie"].split(";")[1:]}
