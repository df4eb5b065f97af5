"""The guardian's page: routes (Starlette, on the node's own trio loop), the security headers, the server.

Every action is the node's control command, called in-process exactly as the control socket calls it
(`node.control`), so a vote or a custody step from the page is signed, sent to the peers and audited as
the same `guardian` command would be. Handlers are async on purpose: they run on the node's loop, never
in a worker thread.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

import trio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from node.config import NodeConfig
from node.crypto.errors import GuardianError, InputError
from node.custody.certificate import certificate_bytes, utc
from node.daemon.http import serve_asgi
from node.daemon.node import Node
from node.page import views
from node.page.session import Session, Sessions, csrf_matches
from node.services.port import Service
from node.storage.db import NodeDatabase

HERE = Path(__file__).resolve().parent
MAX_UPLOAD = 4 * 2**20               # a key backup is well under this
DRAIN_LIMIT = 64 * 2**20             # an oversized body is read (and dropped) up to this, so the browser gets the 413
# What the control socket answers as a refusal (node/daemon/control.py): shown as one line on the page.
REFUSALS = (GuardianError, ValueError, KeyError, TypeError)
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]
_OURS = {name for name, _ in SECURITY_HEADERS}
NOT_LOGGED_IN = "not logged in: open the one-time link that `guardian page --config node.toml` prints"


class Refused(Exception):
    """A request refused before it reached the node: its HTTP status and the one line shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _SecurityHeaders:
    """Every response, pages, files and errors alike, carries the headers of SECURITY_HEADERS."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [h for h in message.get("headers", []) if h[0].lower() not in _OURS] \
                    + SECURITY_HEADERS
            await send(message)
        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class Page:
    def __init__(self, control: Callable[[dict], Any], config: NodeConfig, db: NodeDatabase, key_fingerprint: str,
                 sessions: Sessions | None = None) -> None:
        self.control, self.config, self.db = control, config, db
        self.sessions = sessions or Sessions()
        self.secure = config.page_cert is not None
        # Cookies are per host, not per port: each guardian's node on one machine needs its own name.
        self.cookie = "guardian_" + key_fingerprint.replace("-", "")[:8].lower()
        self.base_url: str | None = None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["utc"] = utc
        routes = [
            Route("/login", self.login),
            Route("/", partial(self.show, "overview")),
            Route("/ceremony", partial(self.show, "ceremony")),
            Route("/custody", partial(self.show, "custody")),
            Route("/decryption", partial(self.show, "decryption")),
            Route("/audit", partial(self.show, "audit")),
            Route("/ceremony/accept", self.accept, methods=["POST"]),
            Route("/ceremony/reject", self.reject, methods=["POST"]),
            Route("/custody/export", self.export, methods=["POST"]),
            Route("/custody/confirm", self.confirm, methods=["POST"]),
            Route("/custody/verify", self.verify, methods=["POST"]),
            Route("/custody/certificate.json", self.certificate),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={Refused: self._refused, HTTPException: self._http_error})
        self.app = _SecurityHeaders(app)

    # --- who is asking ----------------------------------------------------------------------------

    def login_url(self) -> str:
        if self.base_url is None:
            raise InputError("the page is not served yet: wait for the node to start")
        return f"{self.base_url}login?token={self.sessions.new_login()}"

    async def login(self, request: Request) -> Response:
        session_id = self.sessions.redeem(request.query_params.get("token", ""))
        if session_id is None:
            raise Refused(403, "this login link is not valid: it was used already, has expired or is mistyped; "
                               "run `guardian page --config node.toml` for a new one")
        response = RedirectResponse("/", status_code=303)     # the token leaves the address bar
        response.set_cookie(self.cookie, session_id, httponly=True, samesite="strict", secure=self.secure, path="/")
        return response

    def _session(self, request: Request) -> Session:
        session = self.sessions.get(request.cookies.get(self.cookie))
        if session is None:
            raise Refused(403, NOT_LOGGED_IN)
        return session

    async def _form(self, request: Request):
        """The session and the form of a POST: its size capped, its CSRF token checked."""
        session = self._session(request)
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise Refused(411, "the request says not how long it is: send the form from the page")
        if int(length) > MAX_UPLOAD:
            read = 0
            async for chunk in request.stream():
                read += len(chunk)
                if read > DRAIN_LIMIT:
                    break
            raise Refused(413, f"the upload is {int(length) / 2**20:.1f} MiB, more than the {MAX_UPLOAD // 2**20} MiB "
                               f"allowed: a key backup file is far smaller; choose the .backup file you downloaded")
        form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_UPLOAD)
        if not csrf_matches(session, form.get("csrf")):
            raise Refused(403, "the form's security token is missing or wrong: reload the page and try again")
        return session, form

    # --- pages --------------------------------------------------------------------------------------

    async def show(self, section: str, request: Request) -> Response:
        return self._render(request, self._session(request), section)

    def _render(self, request: Request, session: Session, section: str, error: str | None = None,
                status: int = 200) -> Response:
        context = {**views.gather(self.control), "section": section, "csrf": session.csrf, "error": error,
                   "notice": session.notice}
        session.notice = None
        if section == "audit":
            context["audit"] = views.audit_view(self.config.data_dir, self.db.audit_entries())
        return self.templates.TemplateResponse(request, f"{section}.html", context, status_code=status)

    async def _refused(self, request: Request, refused: Refused) -> Response:
        return self.templates.TemplateResponse(request, "refused.html", {"message": str(refused)},
                                               status_code=refused.status)

    async def _http_error(self, request: Request, error: HTTPException) -> Response:
        message = {404: "no such page", 405: "this page does not take that request"}.get(error.status_code,
                                                                                          str(error.detail))
        return self.templates.TemplateResponse(request, "refused.html", {"message": message},
                                               status_code=error.status_code)

    def _done(self, session: Session, where: str, notice: str) -> Response:
        session.notice = notice
        return RedirectResponse(where, status_code=303)

    # --- actions: each one control command --------------------------------------------------------------

    async def accept(self, request: Request) -> Response:
        session, form = await self._form(request)
        try:
            self.control({"cmd": "ceremony-accept", "session": str(form.get("session", ""))})
        except REFUSALS as e:
            return self._render(request, session, "ceremony", _line(e), 400)
        return self._done(session, "/ceremony", "You accepted the proposal; the ceremony starts when every "
                                                "guardian has accepted.")

    async def reject(self, request: Request) -> Response:
        session, form = await self._form(request)
        why = str(form.get("why", "")).strip()
        if not why:
            return self._render(request, session, "ceremony", "say why you reject the proposal", 400)
        try:
            self.control({"cmd": "ceremony-reject", "session": str(form.get("session", "")), "why": why})
        except REFUSALS as e:
            return self._render(request, session, "ceremony", _line(e), 400)
        return self._done(session, "/ceremony", "You rejected the proposal; every guardian is told why.")

    async def export(self, request: Request) -> Response:
        session, form = await self._form(request)
        passphrase = str(form.get("passphrase", ""))
        if passphrase != str(form.get("passphrase2", "")):
            return self._render(request, session, "custody", "the two passphrases differ: type the same one twice", 400)
        directory = _private_directory(self.config.data_dir)
        try:
            # The same export as `guardian backup export`, into a private file that lives only while it is sent.
            out = directory / "key.backup"
            result = self.control({"cmd": "backup-export", "ceremony": form.get("ceremony") or None, "out": str(out),
                                   "passphrase": passphrase})
            data = out.read_bytes()
        except REFUSALS as e:
            return self._render(request, session, "custody", _line(e), 400)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        session.notice = (f"Your key backup was downloaded; its fingerprint is {result['fingerprint']}. Read it aloud "
                          f"and write it down with the copies.")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.config.name}-{result['ceremony'][:16]}")
        return Response(data, media_type="application/octet-stream",
                        headers={"content-disposition": f'attachment; filename="{name}.backup"'})

    async def confirm(self, request: Request) -> Response:
        session, form = await self._form(request)
        copies = str(form.get("copies", "")).strip()
        if not copies.isdigit():
            return self._render(request, session, "custody", f"the number of copies must be a whole number, not "
                                                             f"{copies[:20]!r}", 400)
        try:
            result = self.control({"cmd": "backup-confirm", "ceremony": form.get("ceremony") or None,
                                   "copies": int(copies)})
        except REFUSALS as e:
            return self._render(request, session, "custody", _line(e), 400)
        return self._done(session, "/custody", f"Recorded: {result['copies']} separate copies of your key backup.")

    async def verify(self, request: Request) -> Response:
        session, form = await self._form(request)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return self._render(request, session, "custody", "choose (or drop) the backup file to verify", 400)
        data = await upload.read()
        directory = _private_directory(self.config.data_dir)
        path = directory / "uploaded.backup"
        try:
            # The same check as `guardian backup verify FILE`, on a private copy deleted right after.
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)
            result = self.control({"cmd": "backup-verify", "ceremony": form.get("ceremony") or None,
                                   "file": str(path), "passphrase": str(form.get("passphrase", ""))})
        except REFUSALS as e:
            return self._render(request, session, "custody", _line(e).replace(str(path), upload.filename), 400)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return self._done(session, "/custody", f"Verified: {upload.filename} restores exactly your key (fingerprint "
                                               f"{result['fingerprint']}); the other guardians are told.")

    async def certificate(self, request: Request) -> Response:
        session = self._session(request)
        try:
            certificate = self.control({"cmd": "certificate"})
        except REFUSALS as e:
            return self._render(request, session, "custody", _line(e), 400)
        return Response(certificate_bytes(certificate), media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="certificate.json"'})


def _line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _private_directory(data_dir: Path) -> Path:
    """A new owner-only directory in the data directory (mkdtemp makes it 0700), for one request's file."""
    return Path(tempfile.mkdtemp(prefix=".page-", dir=data_dir))


class PageLogin(Service):
    """The page's one control command: `guardian page` gets a login link through the owner-only socket."""

    name = "page"
    read_only = frozenset({"page-login"})        # a login token lives in memory only

    def __init__(self, page: Page) -> None:
        self.page = page

    def commands(self) -> dict:
        return {"page-login": lambda r: {"url": self.page.login_url()}}


def install(node: Node) -> Page:
    """Serve the guardian's page from this node: its login command, and its server among the node's."""
    config = node.config
    page = Page(node.control, config, node.db, node.identity.fingerprint)
    node.register(PageLogin(page))

    async def start(task_status=trio.TASK_STATUS_IGNORED) -> None:
        certfile, keyfile = (str(p) if p else None for p in (config.page_cert, config.page_key))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_asgi, page.app, config.page_host, config.page_port,
                                               certfile=certfile, keyfile=keyfile, what="page"))
            host = f"[{config.page_host}]" if ":" in config.page_host else config.page_host
            page.base_url = f"{'https' if page.secure else 'http'}://{host}:{port}/"
            task_status.started(page.base_url)
    node.servers["page"] = start
    return page
