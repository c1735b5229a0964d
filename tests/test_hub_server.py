"""The test Hub server (tests/hub_server.py) works with the real huggingface_hub client and transformers."""

import os
import re

import pytest
import torch
from conftest import tiny_marian as build_tiny_marian
from hub_server import hub_env, start_hub_server
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoConfig, MarianMTModel

REPO = "test-user/tiny-nat"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = start_hub_server(tmp_path / "hub_storage")
    hub_env(monkeypatch, server.url, tmp_path / "hf_home")
    yield server
    server.shutdown()


@pytest.fixture
def api(hub):
    return HfApi()  # no endpoint / token given: everything comes from hub_env


def write_folder(path, files):
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_client_is_pointed_at_the_test_server(hub, api):
    assert api.endpoint == hub.url
    assert api.whoami()["name"] == "test-user"
    assert not api.repo_exists(REPO)

    url = api.create_repo(REPO, exist_ok=True)
    assert url.repo_id == REPO and url.startswith(hub.url)
    assert api.repo_exists(REPO)
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO)
    assert conflict.value.response.status_code == 409
    # A bare name goes to the user's namespace, like on the Hub.
    assert api.create_repo("bare-name").repo_id == "test-user/bare-name"

    # A new repo holds the Hub's initial commit with a .gitattributes file.
    assert api.list_repo_files(REPO) == [".gitattributes"]
    (initial,) = api.list_repo_commits(REPO)
    assert initial.title == "initial commit" and re.fullmatch(r"[0-9a-f]{40}", initial.commit_id)
    assert ("GET", "/api/whoami-v2") in hub.requests and ("POST", "/api/repos/create") in hub.requests


def test_branches_tags_and_downloads(tmp_path, hub, api):
    api.create_repo(REPO)
    folder = write_folder(tmp_path / "v0", {"config.json": '{"round": 0}', "sub/data.bin": bytes(range(256))})
    main_commit = api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="round 0")
    assert re.fullmatch(r"[0-9a-f]{40}", main_commit.oid)

    # Committing to a branch that does not exist fails like on the Hub; after create_branch it works.
    folder = write_folder(tmp_path / "v1", {"config.json": '{"round": 1}', "extra.txt": "only on round-1"})
    with pytest.raises(RevisionNotFoundError):
        api.upload_folder(folder_path=folder, repo_id=REPO, revision="round-1", commit_message="round 1")
    api.create_branch(REPO, branch="round-1")
    api.create_branch(REPO, branch="round-1", exist_ok=True)
    branch_commit = api.upload_folder(folder_path=folder, repo_id=REPO, revision="round-1", commit_message="round 1")
    api.create_tag(REPO, tag="v1", revision="round-1")

    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main_commit.oid, "round-1": branch_commit.oid}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", branch_commit.oid)]
    assert api.list_repo_files(REPO) == [".gitattributes", "config.json", "sub/data.bin"]
    assert api.list_repo_files(REPO, revision="round-1") == [
        ".gitattributes",
        "config.json",
        "extra.txt",
        "sub/data.bin",
    ]
    assert [c.title for c in api.list_repo_commits(REPO, revision="round-1")] == [
        "round 1",
        "round 0",
        "initial commit",
    ]
    assert api.model_info(REPO, revision="v1").sha == branch_commit.oid
    assert {s.rfilename: s.size for s in api.model_info(REPO).siblings}["sub/data.bin"] == 256

    # Downloads by branch, tag and commit id land in the cache under the right commit.
    assert read(hf_hub_download(REPO, "config.json")) == b'{"round": 0}'
    for revision in ("round-1", "v1", branch_commit.oid):
        path = hf_hub_download(REPO, "config.json", revision=revision)
        assert read(path) == b'{"round": 1}' and branch_commit.oid in path
    snapshot = snapshot_download(REPO, revision="round-1")
    assert read(os.path.join(snapshot, "sub", "data.bin")) == bytes(range(256))
    assert read(os.path.join(snapshot, "extra.txt")) == b"only on round-1"

    # Re-uploading unchanged files creates no commit (the client compares the preupload oids).
    again = api.upload_folder(folder_path=folder, repo_id=REPO, revision="round-1", commit_message="no-op")
    assert again.oid == branch_commit.oid


def test_missing_repo_revision_and_file(api):
    api.create_repo(REPO)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/nope", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, ".gitattributes", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "config.json")


def test_large_files_go_through_lfs(hub, api):
    hub.lfs_threshold = 1000
    api.create_repo(REPO)
    weights = os.urandom(5000)
    api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=REPO, commit_message="w")
    api.upload_file(path_or_fileobj=b"small", path_in_repo="small.txt", repo_id=REPO, commit_message="s")

    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in hub.requests
    assert sum(method == "PUT" for method, _ in hub.requests) == 1
    entries = {f.path: f for f in api.list_repo_tree(REPO)}
    assert entries["model.safetensors"].lfs.size == 5000 and entries["small.txt"].lfs is None
    path = hf_hub_download(REPO, "model.safetensors")
    assert read(path) == weights
    assert os.path.basename(os.path.realpath(path)) == entries["model.safetensors"].lfs.sha256  # blob named by sha256


def tiny_marian():
    return build_tiny_marian(vocab_size=100, eos_token_id=1)


def test_transformers_push_to_hub_and_from_pretrained(tmp_path, api):
    model = tiny_marian()
    model.push_to_hub(REPO, revision="round-1")

    assert "model.safetensors" in api.list_repo_files(REPO, revision="round-1")
    assert "model.safetensors" not in api.list_repo_files(REPO)  # main untouched
    config = AutoConfig.from_pretrained(REPO, revision="round-1", cache_dir=tmp_path / "cache")
    assert (config.model_type, config.d_model) == ("marian", 16)
    loaded = MarianMTModel.from_pretrained(REPO, revision="round-1", cache_dir=tmp_path / "cache")
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    with pytest.raises(OSError):
        MarianMTModel.from_pretrained(REPO, cache_dir=tmp_path / "cache")  # main has no weights


def test_injected_failures(tmp_path, hub, api):
    api.create_repo(REPO)
    folder = write_folder(tmp_path / "up", {"a.txt": "a"})

    # The client retries the preupload call on a 500 and the upload succeeds.
    hub.fail_next(1, status=500, path_contains="/preupload/")
    api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="retried")
    assert sum("/preupload/" in path for _, path in hub.requests) == 2
    assert "a.txt" in api.list_repo_files(REPO)

    # The commit call is not retried: the error reaches the caller and nothing is committed.
    head = api.list_repo_refs(REPO).branches[0].target_commit
    hub.fail_next(1, status=503, path_contains="/commit/", method="POST")
    with pytest.raises(HfHubHTTPError) as failure:
        api.upload_file(path_or_fileobj=b"b", path_in_repo="b.txt", repo_id=REPO, commit_message="fails")
    assert failure.value.response.status_code == 503
    assert api.list_repo_refs(REPO).branches[0].target_commit == head
    assert "b.txt" not in api.list_repo_files(REPO)
    assert hub.pending_failures() == 0


def test_injected_failure_after_some_requests_go_through(tmp_path, hub, api):
    api.create_repo(REPO)
    hub.fail_next(1, status=503, path_contains="/commit/", method="POST", after=1)
    assert hub.pending_failures() == 1
    api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=REPO, commit_message="goes through")
    with pytest.raises(HfHubHTTPError) as failure:  # the second matching request is the one that fails
        api.upload_file(path_or_fileobj=b"b", path_in_repo="b.txt", repo_id=REPO, commit_message="fails")
    assert failure.value.response.status_code == 503 and hub.pending_failures() == 0
    api.upload_file(path_or_fileobj=b"c", path_in_repo="c.txt", repo_id=REPO, commit_message="goes through")
    commits = [status for method, path, status in hub.responses if method == "POST" and "/commit/" in path]
    assert commits == [200, 503, 200]
    assert api.list_repo_files(REPO) == [".gitattributes", "a.txt", "c.txt"]


def test_start_hub_server_unpacks_and_stores_on_disk(tmp_path, monkeypatch):
    url, shutdown = start_hub_server(tmp_path / "storage")
    hub_env(monkeypatch, url, tmp_path / "hf_home")
    try:
        api = HfApi(endpoint=url, token="hf_test")
        api.create_repo("someone/else")
        assert (tmp_path / "storage" / "repos" / "models" / "someone" / "else" / "refs.json").is_file()
        with pytest.raises(HfHubHTTPError) as unauthorized:
            HfApi(endpoint=url, token=False).create_repo("someone/other")
        assert unauthorized.value.response.status_code == 401
    finally:
        shutdown()
