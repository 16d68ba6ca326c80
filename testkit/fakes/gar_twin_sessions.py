"""The GAR twin's uploads: sessions outside ``/v2/<name>/``, one write each, mounts.

Evidence (docs/GAR.md U1-U11): ``POST .../blobs/uploads/`` answers 202 with a Location
at ``/artifacts-uploads/namespaces/P/repositories/R/uploads/<opaque>`` (or under
``/v2/P/R/pkg/blobs/uploads/``); a session takes one write ("Artifact Registry does not
support Docker chunked uploads"); the committing PUT answers 201 with
``Docker-Content-Digest``. Open, so knobs: the Location's form (absolute, a query
string), whether a session needs ``Authorization`` (e2b-dev/infra says PATCH does not;
harbor#17179 saw ``401 not authenticated: No valid credential was supplied.`` on
``/artifacts-uploads/``), the PATCH answer's status, Location and Range, the PUT's
status and headers, what a monolithic ``POST ?digest=`` does, whether mounts land.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from testkit.fakes.gar_twin_auth import AuthMixin
from testkit.fakes.gar_twin_wire import Headers, digest_of, oci_error, repository_of, respond

JSON = [("content-type", "application/json")]


@dataclass
class Session:
    name: str
    project: str
    repository: str
    data: bytes = b""
    written: bool = False
    writes: int = 0


class SessionsMixin(AuthMixin):
    sessions: dict[str, Session]
    writes: list[int]  # writes per committed session

    # ------------------------------------------------------------------ POST

    async def upload(self, name: str, groups: dict[str, Any], request: Request, send: Any) -> None:
        if request.method != "POST":
            await self._drain(request)
            await respond(send, 405, JSON, oci_error("UNSUPPORTED", "method not allowed"))
            return
        query = request.query_params
        repository = repository_of(name)
        mount, source = query.get("mount", ""), query.get("from", "")
        if mount and source and self.knobs.mount == "created":
            held = self.store.blobs.get(repository_of(source), {}).get(mount)
            if held is not None:
                self.store.blobs[repository][mount] = held
                await respond(send, 201, self._landed(name, mount))
                return
        if digest := query.get("digest", ""):
            if self.knobs.monolithic_post == "refused":
                await self._drain(request)
                body = oci_error("UNSUPPORTED", "monolithic uploads are not supported")
                await respond(send, 405, JSON, body)
                return
            data = await request.body()
            if self.knobs.monolithic_post == "created":
                await self._commit(name, repository, data, digest, send, writes=1)
                return
        else:
            await self._drain(request)
        project, repo = repository.split("/")
        opaque = self.new_opaque()
        self.sessions[opaque] = Session(name, project, repo)
        headers: Headers = []
        if self.knobs.upload_location != "none":
            headers.append(("location", self._session_url(request, opaque)))
        if self.knobs.upload_uuid:
            headers.append(("docker-upload-uuid", opaque[:36]))
        await respond(send, 202, headers)

    def _session_url(self, request: Request, opaque: str) -> str:
        session = self.sessions[opaque]
        p, r = session.project, session.repository
        form = self.knobs.upload_location
        if form == "pkg":
            return f"/v2/{p}/{r}/pkg/blobs/uploads/{opaque}"
        base = f"/artifacts-uploads/namespaces/{p}/repositories/{r}/uploads"
        if form == "query":
            return f"{base}?upload_id={opaque}&upload_protocol=docker"
        if form == "absolute":
            return f"http://{request.headers['host']}{base}/{opaque}"
        return f"{base}/{opaque}"

    def _landed(self, name: str, digest: str) -> Headers:
        headers: Headers = [("location", f"/v2/{name}/blobs/{digest}")]
        if self.knobs.put_digest:
            headers.append(("docker-content-digest", digest))
        return headers

    # ------------------------------------------------------------------ sessions

    async def session(self, opaque: str | None, request: Request, send: Any) -> None:
        opaque = opaque or request.query_params.get("upload_id", "")
        session = self.sessions.get(opaque)
        if session is None:
            await self._drain(request)
            await respond(send, 404, JSON, oci_error("BLOB_UPLOAD_UNKNOWN", "upload unknown"))
            return
        if self.knobs.session_auth and not await self.authorize(
            request, send, session.name, "push"
        ):
            return
        method = request.method
        if method == "PATCH":
            await self._patch(opaque, session, request, send)
        elif method == "PUT":
            await self._put(opaque, session, request, send)
        elif method == "GET":
            end = max(len(session.data) - 1, 0)
            await respond(
                send, 204, [("range", f"0-{end}"), ("location", self._session_url(request, opaque))]
            )
        elif method == "DELETE":
            self.sessions.pop(opaque, None)
            await respond(send, 204, [])
        else:
            await self._drain(request)
            await respond(send, 405, JSON, oci_error("UNSUPPORTED", "method not allowed"))

    async def _write(self, session: Session, request: Request, send: Any) -> bool:
        """Take the request's body as the session's one write; False when refused."""
        body = await request.body()
        if not body:
            return True
        if session.written:
            status = self.knobs.second_write_status
            await respond(
                send, status, JSON, oci_error("BLOB_UPLOAD_INVALID", "one write per session")
            )
            return False
        session.data, session.written = body, True
        session.writes += 1
        return True

    async def _patch(self, opaque: str, session: Session, request: Request, send: Any) -> None:
        if not await self._write(session, request, send):
            return
        knobs = self.knobs
        headers: Headers = []
        if knobs.patch_location == "new":
            self.sessions.pop(opaque)
            opaque = self.new_opaque()
            self.sessions[opaque] = session
        if knobs.patch_location != "none":
            headers.append(("location", self._session_url(request, opaque)))
        last = max(len(session.data) - 1, 0)
        if knobs.patch_range != "none":
            form = {"0-N": f"0-{last}", "bytes=0-N": f"bytes=0-{last}", "0-0": "0-0"}
            headers.append(("range", form[knobs.patch_range]))
        await respond(send, knobs.patch_status, headers)

    async def _put(self, opaque: str, session: Session, request: Request, send: Any) -> None:
        if not await self._write(session, request, send):
            return
        digest = request.query_params.get("digest", "")
        self.sessions.pop(opaque, None)
        repository = f"{session.project}/{session.repository}"
        await self._commit(session.name, repository, session.data, digest, send, session.writes)

    async def _commit(
        self, name: str, repository: str, data: bytes, digest: str, send: Any, writes: int
    ) -> None:
        if digest != digest_of(data):
            await respond(send, 400, JSON, oci_error("DIGEST_INVALID", "digest did not match"))
            return
        self.store.blobs.setdefault(repository, {})[digest] = data
        self.writes.append(writes)
        await respond(send, self.knobs.put_status, self._landed(name, digest))
