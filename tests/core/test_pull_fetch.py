"""One pull in this process (``hoshikage_core.pull.fetch``) against the loopback hubs, with
random bytes for a file: what a hostile or broken hub cannot make it do."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hoshikage_core.pull import fetch, store
from hoshikage_core.pull.hub import NotFound
from hoshikage_core.pull.landing import Corrupt

from tests.support.hubs import Hubs


@pytest.fixture
def hubs(tmp_path):
    blob = tmp_path / "Model-Q4_K_M.gguf"
    blob.write_bytes(os.urandom(300_000))
    with Hubs() as hubs:
        hubs.file = blob
        yield hubs


def settings(tmp_path, hubs) -> fetch.Settings:
    return fetch.Settings(root=tmp_path / "store", hf_endpoint=hubs.hf, registry=hubs.registry)


def test_a_path_out_of_the_repo_is_never_written(tmp_path, hubs):
    hubs.add_hf("org/evil-GGUF", {"../../evil-Q4_K_M.gguf": hubs.file})
    with pytest.raises(NotFound, match="no GGUF files"):
        fetch.pull("org/evil-GGUF", settings(tmp_path, hubs))
    assert not list(tmp_path.rglob("evil*"))


def test_a_manifest_with_a_bad_digest_is_refused(tmp_path, hubs):
    hubs.add_ollama("library/bad:1b", hubs.file)
    hubs.ollama["library/bad:1b"]["layers"][0]["digest"] = "sha256:../../../../x"
    with pytest.raises(Exception, match="bad digest"):
        fetch.pull("bad:1b", settings(tmp_path, hubs))
    assert not (tmp_path / "store" / "blobs").exists() or not list(
        (tmp_path / "store" / "blobs").iterdir()
    )


def test_a_layer_whose_bytes_do_not_match_its_digest_is_deleted(tmp_path, hubs):
    hubs.add_ollama("library/m:1b", hubs.file)
    hubs.flip = True
    steps = []
    with pytest.raises(Corrupt, match="SHA-256 mismatch"):
        fetch.pull("m:1b", settings(tmp_path, hubs), steps.append)
    assert not [p for p in (tmp_path / "store" / "blobs").iterdir() if not p.name.endswith(".lock")]
    assert store.records(tmp_path / "store") == []
    assert [s.status for s in steps][:2] == ["pulling manifest", steps[1].status]
    hubs.flip = False
    record = fetch.pull("m:1b", settings(tmp_path, hubs))
    digest = hashlib.sha256(hubs.file.read_bytes()).hexdigest()
    assert record["path"].endswith(f"blobs/sha256-{digest}") and record["options"] == {
        "temperature": 0.5
    }
    saved = json.loads((tmp_path / "store" / "manifests" / "m%3A1b.json").read_text())
    assert saved["name"] == "m:1b" and saved["template"] == "{{ .Prompt }}"


def test_a_cut_connection_resumes_from_the_bytes_it_had(tmp_path, hubs):
    hubs.add_ollama("library/m:1b", hubs.file)
    hubs.cut_after = 100_000
    fetch.pull("m:1b", settings(tmp_path, hubs))
    digest = hashlib.sha256(hubs.file.read_bytes()).hexdigest()
    ranges = [h.get("range") for m, p, h in hubs.requests(f"/cdn/{digest}")]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
    landed = tmp_path / "store" / "blobs" / f"sha256-{digest}"
    assert landed.read_bytes() == hubs.file.read_bytes()
