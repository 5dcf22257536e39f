"""Tests of the offline demo corpus builder (modeling_dino_speech.recipes.demo.corpus).

The build tests need `apt-get` (to fetch the Asterisk sound packages and the recorded voices' packages, cached in
~/.cache/dino-speech/debs) and
espeak-ng + flite (`apt-get install -y espeak-ng flite`, or fetched without root by the builder). Where those
cannot be had the build tests are skipped with the reason; the unit tests at the bottom always run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_dino_speech.data.trials import read_trials
from modeling_dino_speech.recipes.demo import corpus as dc
from modeling_dino_speech.recipes.demo import debian, real_voices, synthesis

MANIFESTS = {
    "train.csv": ["path", "speaker", "duration", "source"],
    "heldout_synth.csv": ["path", "speaker", "duration", "language"],
    "heldout_real.csv": ["path", "speaker", "duration", "language"],
    "heldout_real_new.csv": ["path", "speaker", "duration", "language", "source"],
    "prosody_train.csv": ["path", "label", "speaker", "duration"],
    "prosody_test.csv": ["path", "label", "speaker", "duration"],
}
BALANCED_TRIALS = ["trials_real.txt", "trials_real_crosslang.txt", "trials_synth.txt"]
ALL_PAIRS_TRIALS = ["trials_real_new.txt", "trials_mixed.txt"]
TRIALS = BALANCED_TRIALS + ALL_PAIRS_TRIALS


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A --quick corpus, built once for the module (about 10 s after the packages are cached)."""
    if shutil.which("apt-get") is None and not (shutil.which("espeak-ng") and shutil.which("flite")):
        pytest.skip(
            "demo corpus needs apt-get (Debian/Ubuntu) and espeak-ng + flite: apt-get install -y espeak-ng flite"
        )
    out = tmp_path_factory.mktemp("demo") / "corpus"
    try:
        dc.build_demo_corpus(dc.DemoCorpusConfig.quick_preset(out=str(out)), log=lambda *a: None)
    except dc.DemoCorpusUnavailable as err:
        pytest.skip(f"demo corpus cannot be built here: {err}")
    return out


# ---------------------------------------------------------------------------------------------- layout


def test_layout_and_manifests(corpus: Path):
    for name, header in MANIFESTS.items():
        fields, rows = _read_csv(corpus / name)
        assert fields == header, name
        assert rows, f"{name} is empty"
        for row in rows:
            assert not os.path.isabs(row["path"]) and (corpus / row["path"]).is_file(), row["path"]
            assert float(row["duration"]) > 0.5
    for name in TRIALS + ["README.md", "ATTRIBUTION.md", "voices.json", "corpus.json", "real_sources.csv"]:
        assert (corpus / name).is_file(), name
    fields, rows = _read_csv(corpus / "real_sources.csv")
    assert fields == ["path", "split", "package", "files"] and rows
    music = sorted((corpus / "musan_standin" / "music" / "asterisk-moh").glob("*.wav"))
    assert len(music) == 5

    meta = json.loads((corpus / "corpus.json").read_text())
    assert meta["complete"] and meta["builder_version"] == dc.BUILDER_VERSION
    assert meta["settings"]["quick"] is True
    for split in ("train", "heldout_synth", "heldout_real", "heldout_real_new", "prosody_train", "prosody_test"):
        _, rows = _read_csv(corpus / f"{split}.csv")
        assert meta["counts"][split]["files"] == len(rows)
        assert meta["counts"][split]["seconds"] == pytest.approx(sum(float(r["duration"]) for r in rows), abs=0.1)
    assert meta["counts"]["musan_standin"]["files"] == len(music)

    readme = (corpus / "README.md").read_text()
    assert "STAND-IN" in readme and "IEMOCAP" in readme and "CREMA-D" in readme and "MSP-Podcast" in readme
    attribution = (corpus / "ATTRIBUTION.md").read_text()
    for credit in (
        "Allison Smith",
        "June Wallack",
        "Carlo Flora",
        "ivrvoice.ru",
        "CC-BY-SA-3.0",
        "CC-BY-3.0",
        "Macroform",
        "July E. Jiménez",
        "Armelle Desjardins",
        "Michel Gutierrez",
        "Marco Menardi",
        "Paola Dal Zot",
        "http://www.voip.ammdomus.it",
        "CC-BY-SA-3.0-IT",
        "GPL-2",
        "Danihelka",
        "KTuberling",
    ):
        assert credit in attribution, credit
    licenses = {p.name for p in (corpus / "licenses").iterdir()}
    assert {f"{p}.copyright" for p in real_voices.VERIFIED_PACKAGES} <= licenses
    assert "trials_mixed.txt" in readme and "could not be verified" in readme


def test_real_voices(corpus: Path):
    _, rows = _read_csv(corpus / "heldout_real.csv")
    langs = defaultdict(set)
    for row in rows:
        langs[row["speaker"]].add(row["language"])
    # Allison Smith speaks the en and es sets: one speaker label across two languages.
    assert dict(langs) == {
        "allison_smith": {"en", "es"},
        "june_wallack": {"fr"},
        "carlo_flora": {"it"},
        "ivrvoice_ru_female": {"ru"},
    }


def test_recorded_voices(corpus: Path):
    table = real_voices.read_table()
    split_of = {(r.package, r.path): r.split for r in table}
    speaker_of = {(r.package, r.path): r.speaker for r in table}
    _, held = _read_csv(corpus / "heldout_real_new.csv")
    assert {r["source"] for r in held} == {"ktuberling", "fillets-cs", "asterisk-prompt", "alsa"}
    per_speaker = Counter(r["speaker"] for r in held)
    assert set(per_speaker.values()) <= {2, 3}  # quick: at most 3 per speaker, and at least 2 here
    for row in held:
        assert row["path"].startswith(f"wav/real_new/{row['speaker']}/")
        assert float(row["duration"]) >= 2.5 - 1e-3, row  # joined words and single lines alike
    assert {r["language"] for r in held} >= {"cs", "en"}
    # every utterance is made of files the table puts on its side, of its speaker; no file is used twice
    _, sources = _read_csv(corpus / "real_sources.csv")
    manifests = {
        r["path"]: r["speaker"] for name in ("train.csv", "heldout_real_new.csv") for r in _read_csv(corpus / name)[1]
    }
    assert {r["path"] for r in sources} == {p for p in manifests if p.startswith("wav/real_")}
    used = []
    for row in sources:
        for file in row["files"].split(";"):
            key = (row["package"], file)
            assert split_of[key] == row["split"] and speaker_of[key] == manifests[row["path"]], (row, file)
            used.append(key)
    assert len(used) == len(set(used))


def test_train_source_column(corpus: Path):
    _, rows = _read_csv(corpus / "train.csv")
    by_source = defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
    assert set(by_source) == {"real", "synthetic"}
    assert all(r["path"].startswith("wav/synth/") for r in by_source["synthetic"])
    assert all(r["path"].startswith("wav/real_train/") for r in by_source["real"])
    train_labels = {r.speaker for r in real_voices.read_table() if r.split == "train"}
    real_speakers = {r["speaker"] for r in by_source["real"]}
    assert real_speakers <= train_labels and len(real_speakers) == 3  # quick: one per source
    assert not real_speakers & {r["speaker"] for r in by_source["synthetic"]}


def test_speakers_disjoint_between_splits(corpus: Path):
    speakers = {name: {r["speaker"] for r in _read_csv(corpus / name)[1]} for name in MANIFESTS}
    train = speakers["train.csv"]
    assert len(train) >= 5
    heldout = ("heldout_synth.csv", "heldout_real.csv", "heldout_real_new.csv")
    for other in (*heldout, "prosody_train.csv", "prosody_test.csv"):
        assert not train & speakers[other], other
    for i, a in enumerate(heldout):
        for b in heldout[i + 1 :]:
            assert not speakers[a] & speakers[b], (a, b)
    # the synthetic voices kept out of training are also distinct voice definitions, not just new names
    voices = json.loads((corpus / "voices.json").read_text())
    train_variants = {v.get("variant") or v.get("voice") for v in voices["train"]}
    heldout_variants = {v.get("variant") or v.get("voice") for v in voices["heldout"]}
    assert not train_variants & heldout_variants


def test_prosody_split_by_voice(corpus: Path):
    _, train = _read_csv(corpus / "prosody_train.csv")
    _, test = _read_csv(corpus / "prosody_test.csv")
    assert not {r["speaker"] for r in train} & {r["speaker"] for r in test}
    for rows in (train, test):
        per_voice = defaultdict(Counter)
        for row in rows:
            per_voice[row["speaker"]][row["label"]] += 1
        for counts in per_voice.values():  # every voice renders every style equally often
            assert set(counts) == set(dc.PROSODY_LABELS) and len(set(counts.values())) == 1


def test_trials(corpus: Path):
    spk, lang = {}, {}
    for name in ("heldout_real.csv", "heldout_synth.csv", "heldout_real_new.csv"):
        for row in _read_csv(corpus / name)[1]:
            spk[row["path"]], lang[row["path"]] = row["speaker"], row["language"]
    for name in TRIALS:
        trials = read_trials(corpus / name, audio_root=None)
        read_trials(corpus / name, audio_root=corpus, check_files=True)  # every file exists
        labels = Counter(t.label for t in trials)
        if name in BALANCED_TRIALS:
            assert labels[1] == labels[0] > 0, name
        else:
            assert labels[1] > 0 and labels[0] > labels[1], name
        assert len({frozenset((t.enroll, t.test)) for t in trials}) == len(trials), f"{name}: repeated trial"
        for t in trials:
            assert t.enroll != t.test
            assert t.label == int(spk[t.enroll] == spk[t.test]), (name, t)
    for t in read_trials(corpus / "trials_real_crosslang.txt"):
        pair_langs = {lang[t.enroll], lang[t.test]}
        if t.label == 1:
            assert pair_langs == {"en", "es"} and spk[t.enroll] == "allison_smith"
        else:
            assert "allison_smith" in (spk[t.enroll], spk[t.test])
    real_speakers = {spk[f] for t in read_trials(corpus / "trials_real.txt") for f in (t.enroll, t.test)}
    assert real_speakers == {"allison_smith", "june_wallack", "carlo_flora", "ivrvoice_ru_female"}


def test_all_pairs_trials(corpus: Path):
    new = [r["path"] for r in _read_csv(corpus / "heldout_real_new.csv")[1]]
    synth = [r["path"] for r in _read_csv(corpus / "heldout_synth.csv")[1]]
    pairs = {}
    for name, files in (("trials_real_new.txt", new), ("trials_mixed.txt", new + synth)):
        trials = read_trials(corpus / name)
        pairs[name] = {frozenset((t.enroll, t.test)) for t in trials}
        assert len(trials) == len(files) * (len(files) - 1) // 2  # every pair, once
        assert {f for t in trials for f in (t.enroll, t.test)} == set(files)
    assert pairs["trials_real_new.txt"] < pairs["trials_mixed.txt"]
    mixed = read_trials(corpus / "trials_mixed.txt")
    kinds = {(t.label, t.enroll.startswith("wav/synth/"), t.test.startswith("wav/synth/")) for t in mixed}
    # targets of real and of synthetic speakers, non-targets within and across the two kinds
    assert {(1, False, False), (1, True, True), (0, False, False), (0, True, True)} <= kinds
    assert (0, False, True) in kinds or (0, True, False) in kinds
    assert not any(label and a != b for label, a, b in kinds)


def test_every_file_is_16k_mono_telephone_band(corpus: Path):
    files = sorted(corpus.rglob("*.wav"))
    assert len(files) > 50
    durations = {}
    for name in MANIFESTS:
        durations.update({r["path"]: float(r["duration"]) for r in _read_csv(corpus / name)[1]})
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        wav, _ = sf.read(str(path), dtype="float64")
        peak = np.abs(wav).max()
        assert 10 ** (-12.5 / 20) <= peak <= 10 ** (-0.9 / 20), f"{path}: peak {peak:.3f} outside -12..-1 dBFS"
        power = np.abs(np.fft.rfft(wav)) ** 2
        freqs = np.fft.rfftfreq(len(wav), 1 / 16000)
        above = 10 * np.log10(power[freqs > 4100].sum() / power.sum())
        assert above < -35.0, f"{path}: {above:.1f} dB of the energy above 4.1 kHz (not band-limited)"
        rel = str(path.relative_to(corpus))
        if rel in durations:
            assert durations[rel] == pytest.approx(info.frames / 16000, abs=2e-3)
            if rel.startswith("wav/synth") or rel.startswith("wav/prosody"):
                assert durations[rel] <= 6.0 + 1e-3


def test_second_build_does_nothing(corpus: Path):
    before = _mtimes(corpus)
    messages = []
    meta = dc.build_demo_corpus(dc.DemoCorpusConfig.quick_preset(out=str(corpus)), log=messages.append)
    assert meta["skipped"] is True and "nothing to do" in messages[0]
    assert _mtimes(corpus) == before


@pytest.mark.slow
def test_cli_reports_complete_corpus(corpus: Path):
    before = _mtimes(corpus)
    proc = subprocess.run(
        [sys.executable, "-m", "modeling_dino_speech.recipes.demo.corpus", "--out", str(corpus), "--quick"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    assert _mtimes(corpus) == before


def test_interrupted_build_is_finished_identically(corpus: Path, tmp_path: Path):
    """A killed build (no corpus.json, some files missing, a half-written temp file) is detected and finished;
    finished files are kept, and the re-rendered ones are bit-identical (the build is deterministic)."""
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    _, train = _read_csv(copy / "train.csv")
    _, real = _read_csv(copy / "heldout_real.csv")
    _, prosody = _read_csv(copy / "prosody_test.csv")
    _, new = _read_csv(copy / "heldout_real_new.csv")
    synth = [r["path"] for r in train if r["source"] == "synthetic"]
    recorded = [r["path"] for r in train if r["source"] == "real"]
    removed = [synth[0], synth[-1], recorded[0], recorded[-1], real[0]["path"], prosody[0]["path"], new[0]["path"]]
    original = {p: (copy / p).read_bytes() for p in removed}
    for p in removed:
        (copy / p).unlink()
    (copy / "corpus.json").unlink()
    stale = copy / "wav" / "synth" / ".000.12345.tmp.wav"  # what atomic_path leaves when killed
    stale.write_bytes(b"half a file")
    kept = {k: v for k, v in _mtimes(copy).items() if k.startswith("wav/") and k != str(stale.relative_to(copy))}

    messages = []
    meta = dc.build_demo_corpus(dc.DemoCorpusConfig.quick_preset(out=str(copy)), log=messages.append)
    assert "skipped" not in meta and any("incomplete" in m for m in messages)
    assert dc.corpus_is_complete(copy, dc.DemoCorpusConfig.quick_preset())
    assert not stale.exists()
    for p in removed:
        assert (copy / p).read_bytes() == original[p], f"{p} re-rendered differently"
    after = _mtimes(copy)
    assert {k: after[k] for k in kept} == kept  # untouched
    for name in MANIFESTS:
        assert (copy / name).read_text() == (corpus / name).read_text()


def test_changed_settings_are_not_mistaken_for_complete(corpus: Path):
    assert dc.corpus_is_complete(corpus, dc.DemoCorpusConfig.quick_preset())
    assert not dc.corpus_is_complete(corpus, dc.DemoCorpusConfig.quick_preset(seed=1))
    assert not dc.corpus_is_complete(corpus, dc.DemoCorpusConfig())


def test_refuses_foreign_folder(tmp_path: Path):
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "mine.wav").write_bytes(b"")
    with pytest.raises(FileExistsError, match="refusing"):
        dc.build_demo_corpus(dc.DemoCorpusConfig.quick_preset(out=str(tmp_path)), log=lambda *a: None)
    assert (tmp_path / "wav" / "mine.wav").exists()


@pytest.mark.slow
def test_tools_fetched_without_root(tmp_path: Path):
    """The non-root path: espeak-ng and flite unpacked from their .deb files run with LD_LIBRARY_PATH/--path."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb")
    cache = dc.default_cache_dir()
    try:
        tools = dc.find_speech_tools(cache, mode="local")
    except dc.DemoCorpusUnavailable as err:
        pytest.skip(f"cannot fetch espeak-ng/flite packages: {err}")
    assert str(cache) in tools.espeak and str(cache) in tools.flite and tools.env is not None
    overlay = synthesis.espeak_overlays(tools, tmp_path / "espeak", ["m3"], {})["m3"]
    for cmd in (
        [tools.espeak, f"--path={overlay}", "-v", "en+m3", "-w", str(tmp_path / "e.wav"), "Hello from a private copy."],
        [tools.flite, "-voice", "slt", "-t", "Hello from a private copy.", "-o", str(tmp_path / "f.wav")],
    ):
        subprocess.run(cmd, env=tools.env, check=True, capture_output=True)
    for name in ("e.wav", "f.wav"):
        wav, sr = sf.read(str(tmp_path / name))
        assert len(wav) / sr > 0.8 and np.abs(wav).max() > 0.05


# ---------------------------------------------------------------------------------------------- units


def test_telephone_band_removes_high_frequencies():
    sr = 22050
    t = np.arange(sr) / sr
    wav = (0.5 * np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    out = dc.telephone_band(wav, sr)
    assert out.dtype == np.float32 and abs(len(out) - 16000) <= 2
    spec = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    freqs = np.fft.rfftfreq(len(out) - 4000, 1 / 16000)
    low = spec[np.abs(freqs - 1000) < 20].max()
    high = spec[np.abs(freqs - 6000) < 20].max()
    assert 20 * np.log10(high / low) < -60


def test_trim_silence_is_light():
    sr = 16000
    speech = 0.5 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)
    wav = np.concatenate([np.zeros(sr), speech, 1e-5 * np.ones(sr)]).astype(np.float32)
    out = dc.trim_silence(wav, sr)
    assert len(speech) <= len(out) <= len(speech) + 0.25 * sr  # ~0.1 s margin kept each side
    assert np.abs(out).max() == pytest.approx(0.5, abs=1e-3)


def test_make_trials_balanced_and_labelled():
    rng = np.random.default_rng(0)
    spk2files = {s: [f"{s}/{i}.wav" for i in range(n)] for s, n in (("a", 5), ("b", 4), ("c", 2), ("d", 1))}
    trials = dc.make_trials(spk2files, 40, rng)
    owner = {f: s for s, files in spk2files.items() for f in files}
    labels = Counter(t[0] for t in trials)
    assert labels[0] == labels[1] == 17  # 10 + 6 + 1 distinct target pairs exist, "d" has none
    assert len({frozenset(t[1:]) for t in trials}) == len(trials)
    assert all(t[0] == int(owner[t[1]] == owner[t[2]]) for t in trials)
    assert dc.make_trials(spk2files, 40, np.random.default_rng(0)) == trials  # deterministic


def test_voice_plan_is_deterministic_and_disjoint():
    cfg = dc.DemoCorpusConfig()
    shipped = ["m1", "m3", "f2", "klatt3", "Andy"]
    plan = synthesis.plan_voices(cfg, np.random.default_rng(5), shipped)
    again = synthesis.plan_voices(cfg, np.random.default_rng(5), shipped)
    other = synthesis.plan_voices(cfg, np.random.default_rng(6), shipped)
    assert [v.params for v in plan["train"]] == [v.params for v in again["train"]]
    assert [v.params for v in plan["train"]] != [v.params for v in other["train"]]
    assert len(plan["train"]) == cfg.train_espeak_voices + len(synthesis.FLITE_TRAIN_VOICES) >= 100
    ids = [v.voice_id for g in plan.values() for v in g]
    assert len(ids) == len(set(ids))
    assert all(v.variant_file for v in plan["heldout"] if v.engine == "espeak")  # generated vocal tracts only


def test_generated_variant_file():
    text, params = synthesis.generated_variant("dsv001", np.random.default_rng(0), "female")
    lines = text.splitlines()
    assert lines[:3] == ["language variant", "name dsv001", "gender female"]
    assert sum(line.startswith("formant ") for line in lines) == 9
    assert 150 <= params["pitch_base"] < params["pitch_top"]


def test_parse_apt_depends_or_groups_and_virtuals():
    text = (
        "libfoo\n"
        "  Depends: libc6\n"
        " |Depends: libsystemd0\n"
        "  Depends: libelogind0\n"
        "  Depends: <libvirtual>\n"
        "    libprovider\n"
        "  Recommends: dbus\n"
    )
    groups = debian.parse_apt_depends(text)["libfoo"]
    assert groups == [[["libc6"]], [["libsystemd0"], ["libelogind0"]], [["<libvirtual>", "libprovider"]]]


def test_fingerprint_tracks_content_settings_only():
    a = dc.DemoCorpusConfig(out="x", workers=1)
    assert a.fingerprint() == dc.DemoCorpusConfig(out="y", workers=2, cache="/c").fingerprint()
    assert a.fingerprint() != dc.DemoCorpusConfig(seed=1).fingerprint()
    assert a.fingerprint() != dc.DemoCorpusConfig.quick_preset().fingerprint()
