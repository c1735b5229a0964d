"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only on the server side).

It speaks enough of the Hub's HTTP API for the real ``huggingface_hub`` client, and for transformers'
``from_pretrained`` / ``push_to_hub``, to create repos, commit to branches, tag, list and download files.
Repos live on disk under ``storage_dir`` with git-like semantics: each commit has a 40-hex id and a parent,
branches and tags are refs pointing at commits, file contents are content-addressed blobs. Like on the Hub,
a new repo starts with an "initial commit" holding a ``.gitattributes`` file.

Use in a test::

    from hub_server import hub_env, start_hub_server

    @pytest.fixture
    def hub(tmp_path, monkeypatch):
        server = start_hub_server(tmp_path / "hub")
        hub_env(monkeypatch, server.url, tmp_path / "hf_home")
        yield server
        server.shutdown()

``start_hub_server`` returns a ``HubServer``, which also unpacks as ``url, shutdown = start_hub_server(path)``;
``running_hub_server(path)`` is the context-manager form.

Pointing the client at it: huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET``, the
cache and token paths once, at import time, into ``huggingface_hub.constants``; the module-level ``HfApi`` behind
``huggingface_hub.create_repo`` & co. and transformers' shared ``HfApi`` keep the endpoint they were built with.
Setting environment variables is not enough: ``hub_env(monkeypatch, url, hf_home)`` sets them *and* patches those
constants (ENDPOINT, HUGGINGFACE_CO_URL_TEMPLATE, HF_HUB_OFFLINE=False, HF_HUB_DISABLE_XET=True, caches and token
file under ``hf_home``), the module-level ``HfApi`` and transformers' cached one, and sets ``HF_TOKEN=hf_test``
(write endpoints answer 401 without a bearer token). ``monkeypatch`` undoes all of it after the test.

Failure injection: ``server.fail_next(n, status=500, path_contains="/commit/", method="POST", after=0)`` lets
``after`` matching requests through, then answers the next ``n`` with ``status``; ``server.pending_failures()``
counts the injected failures not answered yet; ``server.requests`` lists ``(method, path)`` of every request,
failed ones included (to count retries exactly), and ``server.responses`` ``(method, path, status)`` of every
answer, in the order they were sent. huggingface_hub retries 5xx on preupload, LFS batch and tree
listing, but not on the commit POST.

Endpoints (``{kind}``: models, datasets or spaces; ``{rev}``: URL-quoted branch, tag or full commit id):
``GET /api/whoami-v2``; ``POST /api/repos/create``; ``DELETE /api/repos/delete``; ``POST /api/validate-yaml``;
``GET /api/{kind}/{repo}[/revision/{rev}]`` (info with ``sha`` and ``siblings``); ``GET .../refs``;
``GET .../tree/{rev}[/{path}]`` (``?recursive=true``); ``POST .../paths-info/{rev}``; ``GET .../commits/{rev}``;
``POST .../preupload/{rev}``; ``POST .../commit/{rev}`` (NDJSON: header, file, lfsFile, deletedFile, deletedFolder);
``POST|DELETE .../branch/{branch}``; ``POST .../tag/{rev}``; ``DELETE .../tag/{tag}``;
``POST /{repo}.git/info/lfs/objects/batch`` with ``PUT /lfs-upload/{sha256}`` (basic transfer);
``HEAD|GET /{repo}/resolve/{rev}/{path}`` (``ETag``, ``X-Repo-Commit``; ``X-Linked-Etag``/``-Size`` for LFS files).

Limitations: no pull requests (``create_pr``), no Xet, no pagination, no Range requests, no gated or private repos,
no permissions beyond "a bearer token is present"; datasets and spaces are stored like models (only models are
tested). The preupload answer is "regular" (inline base64 in the commit) for every file unless
``server.lfs_threshold`` is set: files of that many bytes or more then go through the LFS batch API.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import re
import shutil
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

USER = "test-user"
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An error answered the Hub way: JSON body plus ``X-Error-Code`` / ``X-Error-Message`` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}


def revision_not_found(rev: str) -> HubError:
    return HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


class Blobs:
    """Content-addressed file contents, ``<root>/<sha256>``. A blob "entry" describes one file of a commit."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, lfs: bool = False) -> dict:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256):
            tmp = self.root / f"{sha256}.{threading.get_ident()}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self.root / sha256)
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return {"sha256": sha256, "oid": git_oid, "size": len(data), "lfs": lfs}

    def has(self, sha256: str) -> bool:
        return (self.root / sha256).is_file()

    def read(self, sha256: str) -> bytes:
        return (self.root / sha256).read_bytes()


class Repo:
    """One repo: ``refs.json`` (branches and tags -> commit id) and ``commits/<id>.json`` (metadata + file entries)."""

    def __init__(self, path: Path, lock: threading.RLock):
        self.path, self.lock = path, lock
        self.kind, self.repo_id = path.parts[-3], f"{path.parent.name}/{path.name}"

    def refs(self) -> dict:
        return json.loads((self.path / "refs.json").read_text())

    def _save_refs(self, refs: dict) -> None:
        (self.path / "refs.json").write_text(json.dumps(refs, indent=1))

    def resolve(self, rev: str | None) -> str:
        """Commit id of a branch, a tag (optionally ``refs/heads/`` or ``refs/tags/`` prefixed) or a full commit id."""
        refs, rev = self.refs(), rev or "main"
        name = rev.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = refs["branches"].get(name) or refs["tags"].get(name)
        if oid is None and re.fullmatch(r"[0-9a-f]{40}", rev) and (self.path / "commits" / f"{rev}.json").is_file():
            oid = rev
        if oid is None:
            raise revision_not_found(rev)
        return oid

    def read_commit(self, oid: str) -> dict:
        return json.loads((self.path / "commits" / f"{oid}.json").read_text())

    def files(self, rev: str | None) -> tuple[str, dict]:
        """``(commit id, {path: blob entry})`` at ``rev``."""
        oid = self.resolve(rev)
        return oid, self.read_commit(oid)["files"]

    def commit(self, branch: str, title: str, message: str, ops: list, parent_commit: str | None = None) -> str:
        """Apply ``ops`` (``("add", path, entry)``, ``("delete", path)``, ``("delete_folder", path)``) on ``branch``."""
        with self.lock:
            refs = self.refs()
            head = refs["branches"].get(branch)
            if head is None and refs["branches"]:  # only the initial commit may create a branch
                raise revision_not_found(branch)
            if parent_commit and head and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(self.read_commit(head)["files"]) if head else {}
            for op, path, *entry in ops:
                if op == "add":
                    files[path] = entry[0]
                elif op == "delete" and files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif op == "delete_folder":
                    files = {p: e for p, e in files.items() if not p.startswith(path.rstrip("/") + "/")}
            date = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
            commit = {"parents": [head] if head else [], "title": title, "message": message, "date": date}
            commit.update(authors=[{"user": USER}], files=files)
            oid = hashlib.sha1(json.dumps(commit, sort_keys=True).encode() + b"%d" % time.time_ns()).hexdigest()
            (self.path / "commits" / f"{oid}.json").write_text(json.dumps({"id": oid, **commit}))
            refs["branches"][branch] = oid
            self._save_refs(refs)
            return oid

    def set_ref(self, group: str, name: str, oid: str | None) -> None:
        """Create (409 if it exists) or, with ``oid=None``, delete a ref; ``group`` is "branches" or "tags"."""
        with self.lock:
            refs = self.refs()
            if oid is None and refs[group].pop(name, None) is None:
                raise revision_not_found(name)
            if oid is not None:
                if name in refs[group]:
                    raise HubError(409, f"Reference already exists: {name}")
                refs[group][name] = oid
            self._save_refs(refs)

    def history(self, oid: str | None) -> list[dict]:
        """Commits from ``oid`` back to the initial one, newest first (first parents only)."""
        commits = []
        while oid:
            commit = self.read_commit(oid)
            commits.append({key: commit[key] for key in ("id", "title", "message", "date", "authors")})
            oid = commit["parents"][0] if commit["parents"] else None
        return commits


class RepoStore:
    """All repos and blobs under one directory: ``blobs/`` and ``repos/<kind>/<namespace>/<name>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.blobs = Blobs(self.root / "blobs")
        self.lock = threading.RLock()

    def _path(self, kind: str, repo_id: str) -> Path:
        return self.root / "repos" / kind / repo_id

    def repo(self, kind: str, repo_id: str) -> Repo:
        path = self._path(kind, repo_id)
        if not (path / "refs.json").is_file():
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return Repo(path, self.lock)

    def create(self, kind: str, repo_id: str) -> bool:
        """Create a repo with its initial commit on "main"; False if it already exists."""
        with self.lock:
            path = self._path(kind, repo_id)
            if (path / "refs.json").is_file():
                return False
            (path / "commits").mkdir(parents=True)
            (path / "refs.json").write_text(json.dumps({"branches": {}, "tags": {}}))
            gitattributes = ("add", ".gitattributes", self.blobs.put(GITATTRIBUTES))
            Repo(path, self.lock).commit("main", "initial commit", "", [gitattributes])
            return True

    def delete(self, kind: str, repo_id: str) -> None:
        shutil.rmtree(self.repo(kind, repo_id).path)


def lfs_info(entry: dict, sha_key: str) -> dict:
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry['sha256']}\nsize {entry['size']}\n"
    return {sha_key: entry["sha256"], "size": entry["size"], "pointerSize": len(pointer)}


def tree_entries(files: dict, base: str, recursive: bool) -> list[dict]:
    """Tree listing under folder ``base`` ("" = root): its direct children, or everything below it if ``recursive``."""
    prefix = base.strip("/") + "/" if base.strip("/") else ""
    folders, entries = set(), []
    for path in sorted(p for p in files if p.startswith(prefix)):
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entry = files[path]
            entries.append({"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]})
            if entry["lfs"]:
                entries[-1]["lfs"] = lfs_info(entry, "oid")
    if prefix and not entries and not folders:
        raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
    folder_entries = [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in folders]
    return sorted(folder_entries, key=lambda e: e["path"]) + entries


API = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
GIT = r"/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", API + r"/refs", "list_refs"),
        ("GET", API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", API + r"/commits/(?P<rev>[^/]+)", "list_commits"),
        ("POST", API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", API + r"/branch/(?P<name>[^/]+)", "create_branch"),
        ("DELETE", API + r"/branch/(?P<name>[^/]+)", "delete_branch"),
        ("POST", API + r"/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", API + r"/tag/(?P<name>[^/]+)", "delete_tag"),
        ("POST", GIT + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<sha256>[0-9a-f]{64})", "lfs_upload"),
        ("GET", GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    """Routes a request to the method named in ``ROUTES`` with the URL-unquoted path groups as arguments."""

    protocol_version = "HTTP/1.1"  # keep-alive, so every answer carries a Content-Length

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def _dispatch(self) -> None:
        hub: HubServer = self.server.hub
        self.store, self.url = hub.store, hub.url
        method = "GET" if self.command == "HEAD" else self.command  # HEAD = GET without the body (see _send)
        url = urlsplit(self.path)
        self.query, self.body = parse_qs(url.query), self._read_body()
        hub.requests.append((self.command, url.path))
        try:
            if (status := hub._take_failure(self.command, url.path)) is not None:
                raise HubError(status, f"Injected failure ({status})")
            for route_method, pattern, handler in ROUTES:
                if route_method == method and (match := pattern.fullmatch(url.path)):
                    args = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    if "repo" in args:
                        args["repo"] = self.store.repo(args.pop("kind", "models"), args["repo"])
                    return getattr(self, handler)(**args)
            raise HubError(404, f"No route for {self.command} {url.path}")
        except HubError as error:
            self._send_json({"error": error.message}, error.status, error.headers)
        except Exception as error:  # a bug here, or a malformed request: answer it rather than drop the connection
            self._send_json({"error": f"Internal error: {error!r}"}, 500, {"X-Error-Message": "Internal error"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _read_body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.server.hub.responses.append((self.command, urlsplit(self.path).path, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Malformed JSON body") from None

    def _require_auth(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo_url(self, kind: str, repo_id: str) -> str:
        return f"{self.url}/{'' if kind == 'models' else kind + '/'}{repo_id}"

    # -- account and repos ------------------------------------------------------------------------------------------
    def whoami(self):
        self._require_auth()
        token = {"displayName": "test token", "role": "write"}
        user = {"type": "user", "name": USER, "fullname": "Test User", "email": f"{USER}@example.com", "orgs": []}
        self._send_json({**user, "emailVerified": True, "auth": {"type": "access_token", "accessToken": token}})

    def _kind_and_id(self) -> tuple[str, str]:
        payload = self._json_body()
        return f"{payload.get('type') or 'model'}s", f"{payload.get('organization') or USER}/{payload['name']}"

    def create_repo(self):
        self._require_auth()
        kind, repo_id = self._kind_and_id()
        created = self.store.create(kind, repo_id)
        error = {} if created else {"error": f"You already created this {kind[:-1]} repo: {repo_id}"}
        # Like the Hub, a 409 also carries the url: the client reads it when exist_ok=True.
        self._send_json({**error, "url": self._repo_url(kind, repo_id), "name": repo_id}, 200 if created else 409)

    def delete_repo(self):
        self._require_auth()
        self.store.delete(*self._kind_and_id())
        self._send_json({})

    def validate_yaml(self):
        self._send_json({"errors": [], "warnings": []})

    def repo_info(self, repo: Repo, rev=None):
        oid, files = repo.files(rev)
        siblings = [
            {
                "rfilename": path,
                "size": e["size"],
                "blobId": e["oid"],
                **({"lfs": lfs_info(e, "sha256")} if e["lfs"] else {}),
            }
            for path, e in sorted(files.items())
        ]
        info = {"id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": oid}
        info.update(siblings=siblings)
        info.update(lastModified=repo.read_commit(oid)["date"], private=False, gated=False, disabled=False, tags=[])
        self._send_json({**info, "downloads": 0, "likes": 0, "usedStorage": sum(e["size"] for e in files.values())})

    # -- refs and history -------------------------------------------------------------------------------------------
    def list_refs(self, repo: Repo):
        refs = repo.refs()

        def refs_of(group, kind):
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in sorted(refs[group].items())]

        tags = refs_of("tags", "tags")
        self._send_json({"branches": refs_of("branches", "heads"), "tags": tags, "converts": [], "pullRequests": []})

    def create_branch(self, repo: Repo, name):
        self._require_auth()
        repo.set_ref("branches", name, repo.resolve(self._json_body().get("startingPoint")))
        self._send_json({})

    def delete_branch(self, repo: Repo, name):
        self._require_auth()
        repo.set_ref("branches", name, None)
        self._send_json({})

    def create_tag(self, repo: Repo, rev):
        self._require_auth()
        repo.set_ref("tags", self._json_body()["tag"], repo.resolve(rev))
        self._send_json({})

    def delete_tag(self, repo: Repo, name):
        self._require_auth()
        repo.set_ref("tags", name, None)
        self._send_json({})

    def list_commits(self, repo: Repo, rev):
        self._send_json(repo.history(repo.resolve(rev)))

    # -- files ------------------------------------------------------------------------------------------------------
    def tree(self, repo: Repo, rev, path=""):
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        self._send_json(tree_entries(repo.files(rev)[1], path, recursive))

    def paths_info(self, repo: Repo, rev):
        wanted = parse_qs(self.body.decode()).get("paths", [])
        self._send_json([e for e in tree_entries(repo.files(rev)[1], "", recursive=True) if e["path"] in wanted])

    def resolve(self, repo: Repo, rev, path):
        oid, files = repo.files(rev)
        if (entry := files.get(path)) is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": oid})
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": oid}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry["size"])})
        self._send(200, self.store.blobs.read(entry["sha256"]), "application/octet-stream", headers)

    # -- uploads and commits ----------------------------------------------------------------------------------------
    def preupload(self, repo: Repo, rev):
        self._require_auth()
        files, threshold, answers = repo.files(rev)[1], self.server.hub.lfs_threshold, []
        for item in self._json_body().get("files", []):
            mode = "lfs" if threshold is not None and item["size"] >= threshold else "regular"
            remote = files.get(item["path"])  # same oid as the local file => the client skips it
            remote_oid = remote and remote["sha256" if mode == "lfs" else "oid"]
            answers.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
        self._send_json({"files": answers})

    def lfs_batch(self, repo: Repo):
        self._require_auth()
        objects = [{"oid": obj["oid"], "size": obj["size"]} for obj in self._json_body().get("objects", [])]
        for obj in objects:
            if not self.store.blobs.has(obj["oid"]):  # no "actions" => already uploaded
                obj["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), "application/vnd.git-lfs+json")

    def lfs_upload(self, sha256):
        if hashlib.sha256(self.body).hexdigest() != sha256:
            raise HubError(400, "Uploaded content does not match its sha256")
        self.store.blobs.put(self.body, lfs=True)
        self._send(200, b"", "text/plain")

    def _commit_op(self, key: str, value: dict) -> tuple:
        if key == "file":
            return ("add", value["path"], self.store.blobs.put(base64.b64decode(value["content"])))
        if key == "lfsFile":
            if not self.store.blobs.has(value["oid"]):
                raise HubError(422, f"LFS object {value['oid']} was not uploaded")
            return ("add", value["path"], self.store.blobs.put(self.store.blobs.read(value["oid"]), lfs=True))
        if key in ("deletedFile", "deletedFolder"):
            return ("delete" if key == "deletedFile" else "delete_folder", value["path"])
        raise HubError(400, f"Unknown commit operation {key!r}")

    def commit(self, repo: Repo, rev):
        self._require_auth()
        if self.query.get("create_pr", ["0"])[0] not in ("0", "false"):
            raise HubError(400, "Pull requests are not supported by the test Hub server")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError:
            raise HubError(400, "Malformed NDJSON commit payload") from None
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        ops = [self._commit_op(line["key"], line["value"]) for line in lines if line["key"] != "header"]
        title, description = header.get("summary", ""), header.get("description", "")
        oid = repo.commit(rev.removeprefix("refs/heads/"), title, description, ops, header.get("parentCommit"))
        commit_url = f"{self._repo_url(repo.kind, repo.repo_id)}/commit/{oid}"
        self._send_json({"success": True, "commitOid": oid, "commitUrl": commit_url, "pullRequestUrl": None})


class HubServer:
    """The running server: ``url``, ``store``, ``requests`` and ``responses`` logs, ``lfs_threshold``, ``fail_next()``,
    ``pending_failures()``, ``clear_failures()``, ``shutdown()``."""

    def __init__(self, storage_dir: str | Path, *, lfs_threshold: int | None = None):
        self.store = RepoStore(storage_dir)
        self.lfs_threshold = lfs_threshold
        self.requests: list[tuple[str, str]] = []
        self.responses: list[tuple[str, str, int]] = []
        self._failures: list[list] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        serve = {"poll_interval": 0.05}  # how fast shutdown() returns
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs=serve, name="hub-server", daemon=True)
        self._thread.start()

    def __iter__(self):  # ``url, shutdown = start_hub_server(path)``
        return iter((self.url, self.shutdown))

    def fail_next(
        self, n: int = 1, status: int = 500, path_contains: str = "", method: str | None = None, after: int = 0
    ) -> None:
        """Answer the next ``n`` requests whose path contains ``path_contains`` (and method matches) with ``status``,
        after letting ``after`` of them through (``after=1``: the second matching request fails)."""
        with self._lock:
            self._failures.append([n, status, path_contains, method, after])

    def pending_failures(self) -> int:
        """How many injected failures are still to be answered."""
        with self._lock:
            return sum(failure[0] for failure in self._failures)

    def clear_failures(self) -> None:
        """Drop every pending injected failure (the Hub is back)."""
        with self._lock:
            self._failures.clear()

    def _take_failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for failure in self._failures:
                if failure[0] > 0 and failure[2] in path and failure[3] in (None, method):
                    if failure[4] > 0:  # still letting matching requests through
                        failure[4] -= 1
                        continue
                    failure[0] -= 1
                    return failure[1]
        return None

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_hub_server(storage_dir: str | Path, **kwargs) -> HubServer:
    """Start a server on a free port of 127.0.0.1 in a background thread, storing repos under ``storage_dir``."""
    return HubServer(storage_dir, **kwargs)


@contextlib.contextmanager
def running_hub_server(storage_dir: str | Path, **kwargs):
    server = HubServer(storage_dir, **kwargs)
    try:
        yield server
    finally:
        server.shutdown()


def hub_env(monkeypatch, url: str, hf_home: str | Path, token: str = "hf_test") -> None:
    """Point huggingface_hub (and transformers, if installed) at ``url`` for one test, with caches under ``hf_home``."""
    from huggingface_hub import constants, hf_api

    hf_home, cache = Path(hf_home), str(Path(hf_home) / "hub")
    env = {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": cache}
    for name, value in {**env, "HF_TOKEN": token, "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    constants_values = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": cache,
        "HUGGINGFACE_HUB_CACHE": cache,
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }
    for name, value in constants_values.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", url)  # behind huggingface_hub.create_repo, upload_folder, ...
    if importlib.util.find_spec("transformers") is not None:
        import transformers.utils.hub

        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # rebuilt lazily with the patched endpoint
