"""The verified recorded voices of the demo corpus (modeling_dino_speech.recipes.demo.real_voices): the label
table shipped with the package, the pseudo-utterance construction and the decoding of the recordings.

The table and unit tests always run. The tests on the packages' files fetch them with `apt-get download`
(cached in ~/.cache/dino-speech/debs, like the Asterisk packages) and are skipped where that is impossible.
"""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_packaging import wheel  # noqa: F401  (fixture)

from modeling_dino_speech.recipes.demo import corpus as dc
from modeling_dino_speech.recipes.demo import real_voices as rv
from modeling_dino_speech.recipes.demo.signal import SAMPLING_RATE, join_recordings, read_part, read_recording

#: The only packages recorded voices may come from. Anything else, in particular the sources of the project's
#: independent evaluation, must never enter the table or the builder's downloads.
ALLOWED_VOICE_PACKAGES = {
    "ktuberling-data",
    "fillets-ng-data-cs",
    "asterisk-prompt-es-co",
    "asterisk-prompt-fr-armelle",
    "asterisk-prompt-it-menardi-wav",
    "alsa-utils",
}
#: The analysis's held-out speakers.
HELDOUT = {
    *(
        f"kt_{s}"
        for s in ("da_1", "da_2", "de", "el", "en_1", "en_2", "es_1", "fi", "ga", "gl")
        + ("it", "nds", "nl_1", "pt", "ro", "ru_1", "ru_2", "sl", "sr", "sv")
    ),
    "fl_m",
    "fl_v",
    "ast_es-co_JulyJimenez",
    "ast_fr_ArmelleDesjardins",
    "alsa_voice",
}
#: Held-out speakers the analysis gives a single utterance (kt_en_2: five words, one 6 s utterance).
SINGLE_UTTERANCE = {"kt_en_2"}


@pytest.fixture(scope="module")
def table() -> list[rv.LabelledFile]:
    return rv.read_table()


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    """The verified voices' packages, fetched (once) and unpacked into the shared cache."""
    if shutil.which("apt-get") is None and not any(dc.default_cache_dir().glob("ktuberling-data_*.deb")):
        pytest.skip("the recorded voices' packages need apt-get (Debian/Ubuntu) or their .deb files in the cache")
    try:
        return dc.fetch_debian_packages(list(rv.VERIFIED_PACKAGES))
    except dc.DemoCorpusUnavailable as err:
        pytest.skip(f"the recorded voices' packages cannot be fetched here: {err}")


# ---------------------------------------------------------------------------------------------- the table


def test_table_lists_only_the_allowed_packages(table):
    assert len(table) > 3000
    assert {r.package for r in table} == set(rv.VERIFIED_PACKAGES) == ALLOWED_VOICE_PACKAGES
    asterisk = {
        *rv.SPEECH_PACKAGES.values(),
        *(f"asterisk-core-sounds-{lang}" for lang in rv.SPEECH_PACKAGES),
        "asterisk-moh-opsound-wav",
    }
    assert set(dc.corpus_packages()) == asterisk | ALLOWED_VOICE_PACKAGES  # everything the builder downloads
    for row in table:
        assert not row.path.startswith("/") and ".." not in row.path.split("/"), row
        assert Path(row.path).suffix in {".wav", ".ogg", ".opus", ".gsm"}, row


def test_table_splits_are_speaker_disjoint(table):
    speakers = defaultdict(set)
    for row in table:
        speakers[row.split].add(row.speaker)
    assert set(speakers) == {"train", "heldout"}
    assert not speakers["train"] & speakers["heldout"]
    assert speakers["heldout"] == HELDOUT
    assert len(speakers["train"]) == 48
    # the four Asterisk core voices stay held out in their own lists: they are not part of this table
    assert not any(s.startswith("ast_core") for s in speakers["train"] | speakers["heldout"])
    # possibly one person: a KTuberling language, and each prompt set, sits on one side only
    sides = defaultdict(set)
    for row in table:
        if row.package != "fillets-ng-data-cs":
            sides[row.package, row.language].add(row.split)
    assert all(len(s) == 1 for s in sides.values()), {k: s for k, s in sides.items() if len(s) > 1}
    # every speaker has one language and one package
    for key in ("language", "package"):
        values = defaultdict(set)
        for row in table:
            values[row.speaker].add(getattr(row, key))
        assert all(len(v) == 1 for v in values.values()), key


def test_every_heldout_speaker_has_material_for_two_utterances(table):
    files = Counter(r.speaker for r in table if r.split == "heldout")
    for speaker, n in files.items():
        words = speaker.startswith(("kt_", "alsa_"))
        if speaker in SINGLE_UTTERANCE:
            assert n >= 2
        elif words:
            assert n >= 8, speaker  # 11-15 words of ~1 s make 2-5 joined utterances of >= 2.5 s
        else:
            assert n >= 30, speaker  # candidate lines of 2.5-8 s


@pytest.mark.slow
def test_the_wheel_ships_the_table(wheel):  # noqa: F811
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("modeling_dino_speech/recipes/demo/real_voices.csv").decode("utf-8")
    assert shipped == rv.TABLE.read_text(encoding="utf-8")


def test_read_table_rejects_a_malformed_table(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("package,path,speaker,split\nktuberling-data,de/a.ogg,kt_de,exclude\n")
    with pytest.raises(ValueError, match="unknown package or split"):
        rv.read_table(bad)
    bad.write_text("package,path,speaker,split\nalsa-utils,a.wav,alsa_voice,heldout\nalsa-utils,a.wav,x,train\n")
    with pytest.raises(ValueError, match="twice"):
        rv.read_table(bad)


def test_every_file_of_the_table_is_in_its_package(table, folders):
    rv.check_packages(table, folders)  # raises when a listed file is missing (another package version)
    for package, root in rv.VERIFIED_PACKAGES.items():
        assert (folders[package] / root).is_dir()


# ---------------------------------------------------------------------------------------------- construction


def test_pseudo_utterances_are_long_enough_and_use_every_part_once():
    rng = np.random.default_rng(3)
    lengths = [int(rng.uniform(0.4, 1.6) * SAMPLING_RATE) for _ in range(40)]
    gap, min_length = 2400, 40000
    groups = rv.pseudo_utterances(lengths, np.random.default_rng(0), min_length, gap)
    assert sorted(i for g in groups for i in g) == list(range(40))
    for g in groups:
        assert sum(lengths[i] for i in g) + gap * (len(g) - 1) >= min_length
    # the same seed gives the same groups, another seed other ones
    assert rv.pseudo_utterances(lengths, np.random.default_rng(0), min_length, gap) == groups
    assert rv.pseudo_utterances(lengths, np.random.default_rng(1), min_length, gap) != groups
    # too little material for one utterance: a single (short) group with everything
    assert rv.pseudo_utterances([100, 200], np.random.default_rng(0), min_length, gap) in ([[0, 1]], [[1, 0]])
    assert rv.pseudo_utterances([], np.random.default_rng(0), min_length, gap) == []


def _tone(seconds: float, rate: int, amplitude: float, silence: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    pad = np.zeros(int(silence * rate))
    return np.concatenate([pad, amplitude * np.sin(2 * np.pi * 440 * t), pad]).astype(np.float32)


def test_join_recordings_trims_levels_and_inserts_gaps(tmp_path):
    paths = []
    for i, (seconds, rate, amplitude) in enumerate([(0.8, 44100, 0.9), (0.5, 8000, 0.05), (1.1, 22050, 0.3)]):
        paths.append(tmp_path / f"w{i}.wav")
        sf.write(paths[-1], _tone(seconds, rate, amplitude), rate)
    parts = [read_part(p) for p in paths]
    for part, seconds in zip(parts, (0.8, 0.5, 1.1)):
        assert seconds <= len(part) / SAMPLING_RATE <= seconds + 0.25  # trimmed, ~0.1 s margins kept
    joined = join_recordings(paths, 0.15)
    gap = int(0.15 * SAMPLING_RATE)
    assert len(joined) == sum(len(p) for p in parts) + 2 * gap
    start = len(parts[0])
    assert not joined[start : start + gap].any()  # digital silence between the words
    levels = [np.abs(joined[:start]).max(), np.abs(joined[start + gap : start + gap + len(parts[1])]).max()]
    assert levels == pytest.approx([0.5, 0.5], abs=0.01)  # the quiet word brought to the loud one's level
    assert join_recordings(paths[:1], 0.15) == pytest.approx(parts[0])  # a single line is just trimmed


def test_read_recording_downmix_overshoot_and_gsm(tmp_path):
    left = _tone(1.0, 16000, 0.4)
    sf.write(tmp_path / "half.wav", np.stack([left, np.zeros_like(left)], axis=1), 16000)
    mono, rate = read_recording(tmp_path / "half.wav")
    assert rate == 16000 and np.abs(mono).max() == pytest.approx(0.4, abs=1e-3)  # no 6 dB loss
    both = np.stack([left, 0.5 * left], axis=1)
    sf.write(tmp_path / "both.wav", both, 16000)
    assert read_recording(tmp_path / "both.wav")[0] == pytest.approx(both.mean(axis=1), abs=1e-4)
    sf.write(tmp_path / "over.wav", 1.3 * left / 0.4, 16000, subtype="FLOAT")  # decoded peak 1.3
    over, _ = read_recording(tmp_path / "over.wav")
    assert np.abs(over).max() == pytest.approx(1.0, abs=1e-6)
    sf.write(tmp_path / "prompt.gsm", _tone(1.0, 8000, 0.3), 8000, format="RAW", subtype="GSM610")
    gsm, rate = read_recording(tmp_path / "prompt.gsm")  # header-less: not seekable
    assert rate == 8000 and len(gsm) == 1.6 * 8000 and 0.2 < np.abs(gsm).max() < 0.4


def test_quick_plan_is_deterministic_and_small(table, folders):
    cfg = dc.DemoCorpusConfig.quick_preset()
    plan = rv.plan_verified_voices(table, folders, cfg, np.random.default_rng(0))
    again = rv.plan_verified_voices(table, folders, cfg, np.random.default_rng(0))
    other = rv.plan_verified_voices(table, folders, cfg, np.random.default_rng(1))
    assert plan == again and plan != other
    assert 10 <= len(plan) <= 40
    speakers = Counter((split, source) for split, source, _ in {(u.split, u.source, u.speaker) for u in plan})
    assert set(speakers.values()) == {1}  # one speaker per split and source
    assert {u.split for u in plan} == {"train", "heldout"}


@pytest.mark.slow
def test_full_plan_follows_the_analysis(table, folders):
    cfg = dc.DemoCorpusConfig()
    plan = rv.plan_verified_voices(table, folders, cfg, np.random.default_rng(0))
    held = [u for u in plan if u.split == "heldout"]
    train = [u for u in plan if u.split == "train"]
    per_speaker = Counter(u.speaker for u in held)
    assert set(per_speaker) == HELDOUT and 350 <= len(held) <= 380
    for speaker, n in per_speaker.items():
        assert n <= cfg.real_new_per_speaker
        assert n >= (1 if speaker in SINGLE_UTTERANCE else 2), speaker
    for u in held:
        assert u.seconds >= cfg.joined_min_seconds, u.job.out
        if u.source not in rv.WORD_SOURCES:
            assert len(u.members) == 1 and u.seconds <= cfg.line_max_seconds
        assert all(m.split == "heldout" and m.speaker == u.speaker for m in u.members)
    # training: every file of the table's training side exactly once, long-enough joins, nothing held out
    used = Counter(m for u in train for m in u.members)
    assert set(used) == {r for r in table if r.split == "train"} and set(used.values()) == {1}
    assert {u.speaker for u in train} == {r.speaker for r in table if r.split == "train"}
    joined = defaultdict(list)
    for u in train:
        if Path(u.job.out).stem.startswith("pu"):
            joined[u.speaker].append(u.seconds)
    for speaker, seconds in joined.items():  # only a speaker with too little short material has one short join
        assert len(seconds) == 1 or min(seconds) >= cfg.joined_min_seconds, speaker
    assert 55 <= sum(u.seconds for u in train) / 60 <= 65  # about an hour of recorded training speech
    outs = [u.job.out for u in plan]
    assert len(set(outs)) == len(outs)
