"""A loopback stand-in for the Hugging Face Hub's HTTP API, so push/pull round trips run offline.

It speaks just enough of the API for the installed huggingface_hub client (checked against 2.4) to do:

- ``create_repo``                 POST /api/repos/create
- ``upload_folder``/``create_commit``:
                                  POST /api/models/{repo}/preupload/{rev}   (every file answered "regular")
                                  POST /api/models/{repo}/commit/{rev}      (ndjson, base64 inline content)
                                  POST /api/validate-yaml                   (legacy, non-xet commit path)
- ``model_info``/``repo_info``    GET  /api/models/{repo}[/revision/{rev}]
- ``list_repo_tree``              GET  /api/models/{repo}/tree/{rev}[/{path}]
- ``hf_hub_download`` (and so ``from_pretrained("user/repo")``):
                                  HEAD/GET /{repo}/resolve/{rev}/{filename}
                                  with X-Repo-Commit, ETag, Content-Length and X-Error-Code on misses.

No LFS/xet: the preupload answer decides the upload mode, and answering "regular" for every file makes the
client send all content inline in the commit (base64). The real Hub answers "lfs" for ``*.safetensors`` and
large files, which then go to xet/LFS storage; that path is out of scope here, so keep the test files small
(a few MB at most: bodies above ``MAX_BODY_BYTES`` are refused with 413 rather than buffered).

Only model repositories with a namespace ("user/name") are served. Bounded on purpose: requests are handled
on daemon threads, bodies are size-capped, a stalled answer waits at most ``stall_seconds`` (and stops
waiting when the server stops), and a watchdog shuts the server down after ``lifetime_s`` even if the test
that started it never does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote, urlsplit

MAX_BODY_BYTES = 64 * 1024 * 1024


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file's content: what the Hub uses as ETag and ``oid`` for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class HubRepo:
    """One model repository: an append-only list of commits, each a full snapshot {path: bytes}."""

    private: bool
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # commit shas, oldest first; history[-1] is "main"
    messages: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        return self.history[-1]

    def resolve(self, revision: str) -> str | None:
        """Commit sha for a revision ("main" or a full commit sha); None when unknown."""
        if revision == "main":
            return self.head
        return revision if revision in self.snapshots else None

    def commit(self, files: dict[str, bytes], message: str) -> str:
        digest = hashlib.sha1()
        digest.update((self.history[-1] if self.history else "").encode())
        digest.update(message.encode())
        digest.update(str(len(self.history)).encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
        sha = digest.hexdigest()
        self.snapshots[sha] = files
        self.messages[sha] = message
        self.history.append(sha)
        return sha


@dataclass
class RequestRecord:
    """What the server saw of one request (never the credential itself, only whether it matched)."""

    method: str
    path: str
    authorized: bool


class HubServer(ThreadingHTTPServer):
    """The server object: its state is public so tests can inspect repos and recorded requests."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, token: str | None = None, fail_status: int | None = None, stall_seconds: float = 0.0):
        # Port 0: the OS picks a free port, so parallel test workers never collide.
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.token = token
        self.fail_status = fail_status
        self.stall_seconds = stall_seconds
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[RequestRecord] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (a copy)."""
        with self.lock:
            repo = self.repos[repo_id]
            return dict(repo.snapshots[repo.resolve(revision)])


@contextlib.contextmanager
def run_hub_server(
    token: str | None = None,
    fail_status: int | None = None,
    stall_seconds: float = 0.0,
    lifetime_s: float = 120.0,
) -> Iterator[HubServer]:
    """Serve a fresh, empty Hub on 127.0.0.1 for the duration of the ``with`` block.

    Args:
        token: when set, writes (and reads of private repos) need ``Authorization: Bearer <token>``; others get 401.
        fail_status: when set, every request is answered with this HTTP status (e.g. 500, 503).
        stall_seconds: delay before every answer, to exercise client timeouts.
        lifetime_s: the watchdog stops the server after this long even if the block has not ended.
    """
    server = HubServer(token=token, fail_status=fail_status, stall_seconds=stall_seconds)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    watchdog = threading.Timer(lifetime_s, _stop, args=(server,))
    watchdog.daemon = True
    thread.start()
    watchdog.start()
    try:
        yield server
    finally:
        watchdog.cancel()
        _stop(server)
        thread.join(timeout=5)


def _stop(server: HubServer) -> None:
    if server.stopping.is_set():
        return
    server.stopping.set()  # releases stalled handlers first, so shutdown does not wait on them
    server.shutdown()
    server.server_close()


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.commit = status, message, error_code, commit


class _HubHandler(BaseHTTPRequestHandler):
    server: HubServer
    server_version = "LoopbackHub/1.0"

    def log_message(self, format: str, *args) -> None:
        pass  # the default writes every request to stderr; the test reads `server.requests` instead

    # -- plumbing ----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_POST(self) -> None:
        self._dispatch(send_body=True)

    def _dispatch(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        authorized = self._authorized()
        with self.server.lock:
            self.server.requests.append(RequestRecord(self.command, path, authorized))
        if self.server.stall_seconds > 0 and self.server.stopping.wait(self.server.stall_seconds):
            # Stopped while stalling: drop the connection unanswered, so an abandoned client fails at once
            # instead of pushing on against a server that is gone.
            self.close_connection = True
            return
        try:
            if self.server.fail_status is not None:
                if self.command == "POST":
                    self._read_body()  # drain it, so the client reads our answer instead of a reset
                raise _HubError(self.server.fail_status, "Injected server failure", "InjectedFailure")
            status, headers, body = self._route(path, authorized)
        except _HubError as error:
            status, headers, body = self._error(error)
        except Exception as error:
            status, headers, body = self._error(_HubError(500, f"loopback hub bug: {error!r}"))
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. a timeout test): nothing left to answer

    def _authorized(self) -> bool:
        expected = self.server.token
        if expected is None:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {expected}"

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _HubError(411, "chunked request bodies are not supported; send Content-Length")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _HubError(413, f"request body of {length} bytes is over the {MAX_BODY_BYTES} limit")
        return self.rfile.read(length) if length else b""

    def _read_json(self) -> dict:
        try:
            return json.loads(self._read_body() or b"{}")
        except json.JSONDecodeError as error:
            raise _HubError(400, f"invalid JSON body: {error}") from error

    @staticmethod
    def _json(payload, status: int = 200, headers: dict[str, str] | None = None):
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()

    def _error(self, error: _HubError):
        headers = {"X-Error-Message": error.message}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        return self._json({"error": error.message}, error.status, headers)

    # -- routes ------------------------------------------------------------------------------------------------

    def _route(self, path: str, authorized: bool):
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if self.command == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(authorized)
        if self.command == "POST" and parts == ["api", "validate-yaml"]:
            self._read_body()
            return self._json({"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = f"{parts[2]}/{parts[3]}"
            rest = parts[4:]
            if self.command == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(repo_id, rest[1], authorized)
            if self.command == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(repo_id, rest[1], authorized)
            if self.command == "GET" and not rest:
                return self._model_info(repo_id, "main", authorized)
            if self.command == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._model_info(repo_id, rest[1], authorized)
            if self.command == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo_id, rest[1], "/".join(rest[2:]), authorized)
        if self.command in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), authorized)
        raise _HubError(404, f"the loopback hub does not serve {self.command} {path}")

    def _require_write(self, authorized: bool) -> None:
        if not authorized:
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str, authorized: bool) -> HubRepo:
        repo = self.server.repos.get(repo_id)
        # Like the Hub: a private repo is indistinguishable from a missing one without the right credentials.
        if repo is None or (repo.private and not authorized):
            raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_of(self, repo: HubRepo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _create_repo(self, authorized: bool):
        payload = self._read_json()
        self._require_write(authorized)
        if payload.get("type", "model") != "model":
            raise _HubError(400, "the loopback hub serves model repositories only")
        name, organization = payload.get("name"), payload.get("organization")
        if not name or not organization:
            raise _HubError(400, "repo id must be 'namespace/name'")
        repo_id = f"{organization}/{name}"
        url = f"{self.server.endpoint}/{repo_id}"
        with self.server.lock:
            if repo_id in self.server.repos:
                return self._json({"error": "You already created this model repo", "url": url}, 409)
            repo = HubRepo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
            repo.commit({}, "initial commit")
            self.server.repos[repo_id] = repo
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _preupload(self, repo_id: str, revision: str, authorized: bool):
        payload = self._read_json()
        self._require_write(authorized)
        with self.server.lock:
            repo = self._repo(repo_id, authorized)
            current = repo.snapshots[self._commit_of(repo, revision)]
            files = []
            for entry in payload.get("files", []):
                existing = current.get(entry["path"])
                files.append(
                    {
                        "path": entry["path"],
                        "uploadMode": "regular",  # never "lfs": see the module docstring
                        "shouldIgnore": False,
                        # the client skips files whose remote oid equals its local git oid (unchanged)
                        "oid": git_blob_oid(existing) if existing is not None else None,
                    }
                )
        return self._json({"files": files, "commitOid": repo.head})

    def _commit(self, repo_id: str, revision: str, authorized: bool):
        body = self._read_body()
        self._require_write(authorized)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.server.lock:
            repo = self._repo(repo_id, authorized)
            if revision != "main":
                raise _HubError(400, "the loopback hub only commits to main")
            parent = header.get("parentCommit")
            if parent is not None and parent != repo.head:
                raise _HubError(412, f"parent commit {parent} is not the head of main")
            files = dict(repo.snapshots[repo.head])
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                elif key == "lfsFile":
                    raise _HubError(400, "the loopback hub never asks for LFS uploads, so cannot accept lfsFile")
                else:
                    raise _HubError(400, f"unknown commit operation {key!r}")
            sha = repo.commit(files, header.get("summary", ""))
        return self._json(
            {
                "commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{sha}",
                "commitOid": sha,
                "success": True,
                "pullRequestUrl": None,
            }
        )

    def _model_info(self, repo_id: str, revision: str, authorized: bool):
        with self.server.lock:
            repo = self._repo(repo_id, authorized)
            sha = self._commit_of(repo, revision)
            files = repo.snapshots[sha]
            now = _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
            info = {
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": now,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [
                    {"rfilename": p, "size": len(c), "blobId": git_blob_oid(c)} for p, c in sorted(files.items())
                ],
            }
        return self._json(info)

    def _tree(self, repo_id: str, revision: str, folder: str, authorized: bool):
        recursive = "recursive=true" in (urlsplit(self.path).query or "").lower()
        with self.server.lock:
            repo = self._repo(repo_id, authorized)
            files = repo.snapshots[self._commit_of(repo, revision)]
        prefix = folder.rstrip("/") + "/" if folder else ""
        entries, folders = [], set()
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix) :]
            if "/" in relative and not recursive:
                folders.add(prefix + relative.split("/")[0])
                continue
            entries.append({"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)})
        entries += [{"type": "directory", "path": p, "oid": "0" * 40} for p in sorted(folders)]
        if folder and not entries:
            raise _HubError(404, f"{folder} does not exist on main", "EntryNotFound")
        return self._json(entries)

    def _resolve(self, repo_id: str, revision: str, filename: str, authorized: bool):
        with self.server.lock:
            repo = self._repo(repo_id, authorized)
            sha = self._commit_of(repo, revision)
            content = repo.snapshots[sha].get(filename)
        if content is None:
            # X-Repo-Commit on a miss lets the client cache the absence per commit, as with the real Hub.
            raise _HubError(404, f"Entry not found: {filename}", "EntryNotFound", commit=sha)
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{git_blob_oid(content)}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Length": str(len(content)),
        }
        return HTTPStatus.OK, headers, content
