"""End to end: `train.py dino` trains, checkpoints, resumes after SIGKILL to the same weights, runs on two
real processes, detects a collapse and exports a model AutoModel loads."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import make_corpus
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"

TINY = [
    "model.backbone=ecapa_tdnn",
    "model.ecapa_channels=32",
    "model.ecapa_mfa_channels=64",
    "model.ecapa_se_channels=16",
    "model.pooling=attentive_statistics",
    "model.attention_channels=16",
    "model.embedding_size=32",
    "model.dino_hidden_size=64",
    "model.dino_bottleneck_size=16",
    "model.dino_num_prototypes=64",
    "data.crops.global_seconds=1.0",
    "data.crops.local_seconds=0.5",
    "data.crops.n_local=2",
    "data.batch_size=8",
    "data.num_workers=0",
    "optim.warmup_epochs=0.5",
    "optim.lr=0.01",
    "optim.freeze_last_layer_epochs=0.2",
    "log_every=1",
    "num_threads=1",
    "mixed_precision=no",
    "eval.trials=null",
]


def run_train(args, env_extra=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(TRAIN), "dino", *args], env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


def kill_at_checkpoint_and_resume(args, output_dir, step=4):
    """Run `train.py dino args`, SIGKILL it as soon as checkpoint `step` exists, then `--resume` it: that run."""
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "dino", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (output_dir / "checkpoints" / f"checkpoint_{step:08d}").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (output_dir / "final").exists(), "the run finished before it could be killed"
    return run_train([*args, "--resume"])


def assert_same_training_state(a, b):
    """The teacher and the DINO loss (its centre) of two runs are bit-identical."""
    for name in ("teacher/model.safetensors", "dino_loss.safetensors"):
        x, y = load_file(a / "pretraining" / name), load_file(b / "pretraining" / name)
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], atol=0, rtol=0, msg=key)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    manifest = make_corpus(root, speakers=4, per_speaker=6)
    return manifest


def common(manifest, out, steps, extra=()):
    return [
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--output_dir",
        str(out),
        f"data.train={manifest}",
        "data.augment.musan_root=null",
        *TINY,
        f"max_steps={steps}",
        *extra,
    ]


def signal_after_logging(manifest, out, steps, sig, lines):
    """Start a run, send `sig` once `lines` steps are in metrics.jsonl; returns (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "dino", *common(manifest, out, steps, ["save_every=0"])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < lines):
        time.sleep(0.01)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=300)
    return proc.returncode, output


@pytest.mark.slow
def test_train_export_and_load(corpus, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModel

    import modeling_dino_speech  # noqa: F401

    # a corrupt file in the manifest is skipped and reported, never a crash mid-epoch (written outside the shared
    # corpus, which the other tests read)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    manifest = corpus.parent / "with_bad.csv"
    manifest.write_text(corpus.read_text() + f"{bad},spk0,2.0\n")
    out = tmp_path / "run"
    result = run_train(common(manifest, out, 6, ["save_every=3", "data.crops.on_error=skip"]))
    assert result.returncode == 0, result.stderr[-4000:]
    final = out / "final"
    model = AutoModel.from_pretrained(final).eval()
    fe = AutoFeatureExtractor.from_pretrained(final)
    assert (final / "model.safetensors").exists() and (final / "README.md").exists()
    wave = torch.randn(16000).numpy() * 0.1
    with torch.no_grad():
        emb = model(**fe(wave, sampling_rate=16000, return_tensors="pt")).embeddings
    # the demo recipe exports the pooled statistics (2 x the ECAPA's aggregation channels), not the 32-d layer
    assert model.config.embedding_layer == "pooled"
    assert emb.shape == (1, model.pooling.output_size) and emb.shape[1] != 32 and torch.isfinite(emb).all()
    # the exported weights are the teacher's, plus the whitenings the demo recipe fits at export, one per layer
    teacher = load_file(out / "pretraining" / "teacher" / "model.safetensors")
    exported = load_file(final / "model.safetensors")
    assert {"whitening.mean", "whitening.transform", "pooled_whitening.mean", "pooled_whitening.transform"} <= set(
        exported
    )
    for key, value in exported.items():
        if not key.startswith(("whitening.", "pooled_whitening.")):
            torch.testing.assert_close(teacher[f"dino_speech.{key}"], value, atol=0, rtol=0)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [l["step"] for l in lines if "loss" in l]
    assert steps == [1, 2, 3, 4, 5, 6]
    for key in (
        "loss",
        "teacher_entropy",
        "student_entropy",
        "kl_teacher_student",
        "center_norm",
        "embedding_std",
        "effective_rank",
        "teacher_momentum",
        "lr",
    ):
        assert key in lines[-1]
    assert lines[-1]["skipped_files"] >= 1
    assert "corrupt.wav" in result.stderr + result.stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_00000003", "checkpoint_00000006"]
    assert list((out / "logs").rglob("events.out.tfevents*")), "TensorBoard events missing"


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(corpus, tmp_path):
    steps = 10
    straight = tmp_path / "straight"
    result = run_train(common(corpus, straight, steps, ["save_every=2"]))
    assert result.returncode == 0, result.stderr[-4000:]

    killed = tmp_path / "killed"
    resumed = kill_at_checkpoint_and_resume(common(corpus, killed, steps, ["save_every=2"]), killed)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert_same_training_state(straight, killed)


@pytest.mark.slow
def test_ssps_is_logged_and_its_queue_resumes_to_the_same_weights(corpus, tmp_path):
    # the pseudo-positives depend on the queue of past teacher views: a resume that lost it would draw others
    steps, ssps = 10, ["dino.ssps_weight=0.5", "dino.ssps_start_fraction=0.3", "dino.ssps_queue_size=32"]
    ssps.append("dino.ssps_neighbors=2")
    straight = tmp_path / "straight"
    result = run_train(common(corpus, straight, steps, ["save_every=2", *ssps]))
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "loss" in row]
    assert ["ssps" in row for row in rows] == [False] * 3 + [True] * 7
    assert all(math.isfinite(row["ssps"]) and -1 <= row["ssps_similarity"] <= 1 for row in rows[3:])

    killed = tmp_path / "killed"
    resumed = kill_at_checkpoint_and_resume(common(corpus, killed, steps, ["save_every=2", *ssps]), killed, step=6)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert_same_training_state(straight, killed)


@pytest.mark.slow
def test_ctrl_c_stops_after_a_whole_step_and_resumes_to_the_same_weights(corpus, tmp_path):
    # A forward pass cut short has already moved the student's BatchNorm statistics: the first Ctrl-C must
    # let the step finish, and the checkpoint it leaves must resume to exactly the uninterrupted weights.
    steps = 10
    straight = tmp_path / "straight"
    result = run_train(common(corpus, straight, steps))
    assert result.returncode == 0, result.stderr[-4000:]

    stopped = tmp_path / "stopped"
    returncode, output = signal_after_logging(corpus, stopped, steps, signal.SIGINT, lines=2)
    assert not (stopped / "final").exists(), "the run finished before it could be interrupted"
    assert returncode == 130, output[-4000:]
    assert "stopping after the step in progress" in output and "Traceback" not in output
    step = int(output.split("interrupted at step ")[1].split(":")[0])
    assert [p.name for p in (stopped / "checkpoints").iterdir()] == [f"checkpoint_{step:08d}"]

    resumed = run_train(common(corpus, stopped, steps, ["save_every=0"]) + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"at step {step}" in resumed.stdout + resumed.stderr
    assert_same_training_state(straight, stopped)


@pytest.mark.slow
def test_resume_with_a_config_that_does_not_fit(corpus, tmp_path):
    out = tmp_path / "run"
    assert run_train(common(corpus, out, 2, ["save_every=2"])).returncode == 0
    result = run_train(common(corpus, out, 4, ["model.embedding_size=48"]) + ["--resume"])
    assert result.returncode != 0
    assert "does not fit the checkpoint" in result.stderr and "embedding_size" in result.stderr


@pytest.mark.slow
def test_two_real_processes_agree(corpus, tmp_path):
    out = tmp_path / "ddp"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}",
        "HF_HUB_OFFLINE": "1",
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29561",
        str(TRAIN),
        "dino",
        *common(corpus, out, 3, ["save_every=0"]),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    check = json.loads((out / "distributed_check.json").read_text())
    assert check["num_processes"] == 2
    assert check["effective_batch"] == 8 and check["micro_batch_per_process"] == 4
    digests = check["teacher_and_centre_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


@pytest.mark.slow
def test_deliberate_collapse_is_detected(corpus, tmp_path):
    # A teacher temperature of 50 makes the teacher's distribution flat: the uniform collapse.
    out = tmp_path / "collapse"
    result = run_train(
        common(
            corpus,
            out,
            30,
            [
                "dino.teacher_temperature=50",
                "dino.warmup_teacher_temperature=50",
                "monitor.patience=3",
                "monitor.collapse_action=stop",
            ],
        )
    )
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "DINO COLLAPSE DETECTED" in log and "UNIFORM" in log
    summary = json.loads((out / "final" / "training_summary.json").read_text())
    assert summary["collapse"] == "uniform" and summary["steps"] < 30


@pytest.mark.slow
def test_push_to_hub_after_training_and_failed_push_keeps_everything(corpus, tmp_path):
    from hub_server import run_hub_server

    token = "hf_trainingPushTestToken123"
    with run_hub_server(token=token, lifetime_s=300) as server:
        env = {
            "HF_ENDPOINT": server.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_TOKEN": token,
            "HF_HOME": str(tmp_path / "hf_home"),
        }
        out = tmp_path / "pushed"
        result = run_train(
            common(corpus, out, 2, ["push_to_hub=true", "hub_model_id=someone/dino-tiny"]), env_extra=env
        )
        assert result.returncode == 0, result.stderr[-4000:]
        files = server.files("someone/dino-tiny")
        assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= set(files)
        assert files["model.safetensors"] == (out / "final" / "model.safetensors").read_bytes()
        assert token not in result.stdout + result.stderr

    # the server is gone: the push fails, training still succeeds and everything stays local
    out = tmp_path / "not_pushed"
    result = run_train(common(corpus, out, 2, ["push_to_hub=true", "hub_model_id=someone/dino-tiny"]), env_extra=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "push to hub: FAILED" in result.stdout
    assert (out / "final" / "model.safetensors").exists() and (out / "pretraining" / "teacher").is_dir()
    assert token not in result.stdout + result.stderr


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_to_resume_from(corpus, tmp_path):
    out = tmp_path / "interrupted"
    returncode, output = signal_after_logging(corpus, out, 200, signal.SIGTERM, lines=3)
    assert returncode != 0
    assert "interrupted at step" in output
    step = int(output.split("interrupted at step ")[1].split(":")[0])
    assert 3 <= step < 200
    assert (out / "checkpoints" / f"checkpoint_{step:08d}").is_dir()
    assert not (out / "final").exists()


@pytest.mark.slow
def test_telephone_band_model_trains_and_embeds_at_8khz(corpus, tmp_path):
    """`model.sampling_rate` is the one rate: the 16 kHz corpus is read, cropped, augmented and embedded at 8 kHz."""
    from transformers import AutoFeatureExtractor, AutoModel

    import modeling_dino_speech  # noqa: F401
    from modeling_dino_speech.data.audio import load_audio
    from modeling_dino_speech.inference import embed_files

    out = tmp_path / "telephone"
    result = run_train(
        common(
            corpus,
            out,
            2,
            ["model.sampling_rate=8000", "model.high_freq=3800", "save_every=0", "export.whitening=false"],
        )
    )
    assert result.returncode == 0, result.stderr[-4000:]
    final = out / "final"
    fe = AutoFeatureExtractor.from_pretrained(final)
    model = AutoModel.from_pretrained(final).eval()
    assert fe.sampling_rate == 8000 and model.config.sampling_rate == 8000 and fe.high_freq == 3800
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "loss" in l] == [1, 2]
    paths = [str(corpus.parent / line.split(",")[0]) for line in corpus.read_text().splitlines()[1:4]]
    embeddings = embed_files(model, fe, paths, progress=False)
    assert embeddings.shape == (3, model.layer_size(model.config.embedding_layer))
    with torch.no_grad():
        direct = model(**fe(load_audio(paths[0], 8000), sampling_rate=8000, return_tensors="pt")).embeddings[0]
    torch.testing.assert_close(torch.from_numpy(embeddings[0]), direct, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_regularisers_are_logged_and_the_export_carries_a_whitening(corpus, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModel

    import modeling_dino_speech  # noqa: F401

    out = tmp_path / "run"
    result = run_train(
        common(
            corpus,
            out,
            3,
            [
                "dino.koleo_weight=0.1",
                "dino.dimension_reg_weight=0.1",
                "export.whitening=true",
                "export.whitening_utterances=16",
                "save_every=0",
            ],
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [row["koleo"] for row in rows if "loss" in row]
    # nearest-neighbour distances of unit vectors are at most 2: the KoLeo term is at least -log 2
    assert len(logged) == 3 and all(-0.6932 <= k < 10 for k in logged)
    spread = [row["dimension_reg"] for row in rows if "loss" in row]
    embedding_size = json.loads((out / "final" / "config.json").read_text())["embedding_size"]
    assert len(spread) == 3 and all(0 < d <= math.log(embedding_size) + 1e-4 for d in spread)
    summary = json.loads((out / "final" / "training_summary.json").read_text())
    assert summary["whitening_utterances"] == 16 and summary["pool_effective_rank"] > 1
    model = AutoModel.from_pretrained(out / "final").eval()
    assert model.config.embedding_whitening and model.whitening is not None
    assert not torch.equal(model.whitening.transform, torch.eye(model.config.embedding_size))
    # the checkpoint to continue training from keeps the teacher as trained, without the whitening
    teacher_config = json.loads((out / "pretraining" / "teacher" / "config.json").read_text())
    assert not teacher_config.get("embedding_whitening", False)
    fe = AutoFeatureExtractor.from_pretrained(out / "final")
    import soundfile as sf

    first = Path(corpus).read_text().splitlines()[1].split(",")[0]  # a file of the manifest (others add bad ones)
    wave, rate = sf.read(Path(corpus).parent / first, dtype="float32")
    with torch.no_grad():
        embedding = model(**fe(wave, sampling_rate=rate, return_tensors="pt")).embeddings
    assert torch.isfinite(embedding).all()
