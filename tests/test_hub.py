"""push_folder_to_hub against a loopback server that speaks the Hub's HTTP API (tests/hub_server.py).

The client is never patched: every push and pull below is real HTTP between huggingface_hub and the server.
huggingface_hub reads HF_HUB_OFFLINE, HF_ENDPOINT and the token path once, at import, and the test session
imports it with HF_HUB_OFFLINE=1 (tests/conftest.py). So:
- the full user path (push, then ``AutoModel.from_pretrained("user/repo")``) runs in a fresh interpreter with
  the environment set before anything is imported;
- in-process tests pass ``endpoint=`` explicitly and set the import-time snapshots to what the environment
  variables would have produced (the ``online`` fixture).
"""

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import run_hub_server
from huggingface_hub import constants

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel
from modeling_dino_speech.training.hub import PushResult, push_folder_to_hub

REPO_ID = "user/tiny-dino-speech"
SERVER_TOKEN = "hf_serverSideTokenQQQQ1234567890"
# Recognisable, so that a leak anywhere (stdout, stderr, log records, result message) is easy to spot.
FAKE_TOKEN = "hf_FAKEtokenDoNotLeakZZZZ0987654321"
MODEL_CARD = "---\nlicense: mit\nlibrary_name: transformers\ntags:\n- speaker-verification\n---\n# tiny dino-speech\n"


def _waveform() -> np.ndarray:
    t = np.arange(16000, dtype=np.float32) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1330 * t)).astype(np.float32)


def _export(folder: Path, with_card: bool = True) -> DinoSpeechModel:
    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=32)
    torch.manual_seed(0)
    model = DinoSpeechModel(config).eval()
    model.save_pretrained(folder)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(folder)
    if with_card:
        (folder / "README.md").write_text(MODEL_CARD)
    return model


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file: any change, addition or deletion shows up."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _local_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("final")
    _export(folder)
    return folder


@pytest.fixture
def online(monkeypatch, tmp_path):
    """What HF_HUB_OFFLINE=0, no HF_TOKEN and an empty HF_HOME would have given had they been set before import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


@pytest.fixture
def hub():
    with run_hub_server(token=SERVER_TOKEN, lifetime_s=60) as server:
        yield server


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    """Every log record at DEBUG and above from the libraries involved (huggingface_hub does not propagate)."""
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "transformers", "modeling_dino_speech")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _assert_no_leak(token: str, result: PushResult, capfd, logs: _Records) -> None:
    out, err = capfd.readouterr()
    assert logs.lines, "expected the push to log something"
    for where, text in [
        ("message", result.message),
        ("stdout", out),
        ("stderr", err),
        ("logs", "\n".join(logs.lines)),
        ("url", result.url or ""),
    ]:
        assert token not in text, f"token leaked into {where}"


# -- the full user path --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_push_then_from_pretrained_round_trip(tmp_path):
    """Push with HF_ENDPOINT + HF_TOKEN from the environment, then AutoModel/AutoFeatureExtractor.from_pretrained
    of the repo id in a fresh interpreter: same embeddings, folder untouched, token nowhere in the output."""
    folder = tmp_path / "final"
    model = _export(folder)
    fe = DinoSpeechFeatureExtractor.from_model_config(model.config)
    with torch.no_grad():
        expected = model(**fe([_waveform()], sampling_rate=16000, return_tensors="pt")).embeddings[0]
    before = _snapshot(folder)
    np.save(tmp_path / "wave.npy", _waveform())

    script = tmp_path / "round_trip.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, logging
        import numpy as np, torch
        torch.set_num_threads(1)
        logging.basicConfig(level=logging.DEBUG)  # a leak in any log record would reach stderr
        import huggingface_hub.utils.logging as hf_logging
        hf_logging.set_verbosity_debug()
        from transformers import AutoFeatureExtractor, AutoModel
        import modeling_dino_speech  # registers the Auto classes
        from modeling_dino_speech.training.hub import push_folder_to_hub

        result = push_folder_to_hub({str(folder)!r}, {REPO_ID!r})  # endpoint and token from the environment
        print("PUSH " + json.dumps({{"ok": result.ok, "url": result.url, "message": result.message}}))
        fe = AutoFeatureExtractor.from_pretrained({REPO_ID!r})
        model = AutoModel.from_pretrained({REPO_ID!r}).eval()
        wave = np.load({str(tmp_path / "wave.npy")!r})
        with torch.no_grad():
            emb = model(**fe([wave], sampling_rate=16000, return_tensors="pt")).embeddings[0]
        print("LOAD " + json.dumps({{"model": type(model).__name__, "fe": type(fe).__name__, "emb": emb.tolist()}}))
    """)
    )
    hf_home = tmp_path / "hf_home"
    with run_hub_server(token=FAKE_TOKEN, lifetime_s=240) as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_"))},
            "HF_ENDPOINT": server.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_TOKEN": FAKE_TOKEN,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OMP_NUM_THREADS": "1",
        }
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=200
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        remote = server.files(REPO_ID)
        paths = [(r.method, r.path) for r in server.requests]

    lines = {
        line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith(("PUSH ", "LOAD "))
    }
    push, load = lines["PUSH"], lines["LOAD"]
    assert push["ok"], push["message"]
    assert push["url"] == f"{server.endpoint}/{REPO_ID}"
    assert "Warning" not in push["message"]
    # Every local file reached the repo byte for byte, and the load went over HTTP into the fresh cache.
    assert remote == _local_files(folder)
    assert ("POST", f"/api/models/{REPO_ID}/commit/main") in paths
    assert any(m == "GET" and p.endswith("/model.safetensors") for m, p in paths)
    assert (hf_home / "hub" / f"models--{REPO_ID.replace('/', '--')}").is_dir()
    assert load["model"] == "DinoSpeechModel" and load["fe"] == "DinoSpeechFeatureExtractor"
    assert torch.equal(torch.tensor(load["emb"], dtype=torch.float32), expected)
    assert _snapshot(folder) == before
    assert FAKE_TOKEN not in proc.stdout and FAKE_TOKEN not in proc.stderr
    assert "Request" in proc.stderr  # debug logging really was on, so the leak check above means something


# -- in-process pushes ---------------------------------------------------------------------------------------


def test_push_uploads_every_file_and_is_idempotent(exported, hub, online, capfd, all_logs):
    before = _snapshot(exported)
    result = push_folder_to_hub(exported, REPO_ID, token=SERVER_TOKEN, endpoint=hub.endpoint, private=True)
    assert result.ok, result.message
    assert result.url == f"{hub.endpoint}/{REPO_ID}"
    assert hub.repos[REPO_ID].private
    assert hub.files(REPO_ID) == _local_files(exported)
    head = hub.repos[REPO_ID].head

    # Pushing the same export again (e.g. a re-run of export) succeeds without an empty commit.
    again = push_folder_to_hub(exported, REPO_ID, token=SERVER_TOKEN, endpoint=hub.endpoint)
    assert again.ok, again.message
    assert hub.repos[REPO_ID].head == head
    assert _snapshot(exported) == before
    _assert_no_leak(SERVER_TOKEN, result, capfd, all_logs)
    assert SERVER_TOKEN not in again.message


def test_missing_model_card_warns_but_pushes(tmp_path, hub, online):
    folder = tmp_path / "final"
    _export(folder, with_card=False)
    result = push_folder_to_hub(folder, REPO_ID, token=SERVER_TOKEN, endpoint=hub.endpoint)
    assert result.ok, result.message
    assert "README.md" in result.message and "Warning" in result.message
    assert "config.json" in hub.files(REPO_ID) and "README.md" not in hub.files(REPO_ID)


def test_push_of_a_missing_folder_fails_cleanly(tmp_path, hub, online):
    result = push_folder_to_hub(tmp_path / "nope", REPO_ID, token=SERVER_TOKEN, endpoint=hub.endpoint)
    assert not result.ok and "is not a folder" in result.message
    assert hub.requests == []


# -- failures: ok=False with a reason, folder untouched, token nowhere ------------------------------------


def _down_endpoint() -> str:
    with run_hub_server() as server:
        endpoint = server.endpoint
    return endpoint  # nothing listens there any more: connection refused


@pytest.mark.parametrize(
    "case, expected",
    [
        ("offline", "HF_HUB_OFFLINE=1"),
        ("server_down", "cannot reach"),
        ("wrong_token", "HTTP 401"),
        ("server_error", "HTTP 500"),
        ("timeout", "timed out"),
    ],
)
def test_failed_push_keeps_everything_local(case, expected, exported, online, monkeypatch, capfd, all_logs):
    before = _snapshot(exported)
    server_kwargs = {"token": SERVER_TOKEN, "lifetime_s": 60}
    if case == "server_error":
        server_kwargs["fail_status"] = 500
    if case == "timeout":
        server_kwargs["stall_seconds"] = 10.0
    if case == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with run_hub_server(**server_kwargs) as server:
        endpoint = _down_endpoint() if case == "server_down" else server.endpoint
        result = push_folder_to_hub(exported, REPO_ID, token=FAKE_TOKEN, endpoint=endpoint, timeout=1.0)
        requests = list(server.requests)

    assert not result.ok and result.url is None
    assert expected in result.message, result.message
    assert "\n" not in result.message
    assert "Nothing local was changed" in result.message
    if case == "offline":
        assert requests == [], "offline mode must not touch the network"
    if case == "wrong_token":
        assert "HF_TOKEN" in result.message
        assert requests and not any(r.authorized for r in requests)
    assert _snapshot(exported) == before
    assert any(result.message in line for line in all_logs.lines), "the failure must be logged"
    _assert_no_leak(FAKE_TOKEN, result, capfd, all_logs)


def test_no_token_says_set_hf_token(exported, hub, online):
    result = push_folder_to_hub(exported, REPO_ID, endpoint=hub.endpoint)
    assert not result.ok
    assert "no token was found" in result.message and "HF_TOKEN" in result.message
    assert REPO_ID not in hub.repos
