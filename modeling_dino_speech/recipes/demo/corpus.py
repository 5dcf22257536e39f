"""The demo corpus: a small multi-speaker speech corpus assembled offline from Debian packages.

``dino-speech demo-corpus --out data/demo [--cache DIR] [--quick]``

What it builds (all paths in the CSVs and trial lists are relative to ``--out``):

* real recorded speech, the Asterisk IVR prompts (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``): four real
  voices, Allison Smith (en and es, one speaker label), June Wallack (fr), Carlo Flora (it) and one female
  Russian voice. They are held out for evaluation only: ``heldout_real.csv``, ``trials_real.txt`` and
  ``trials_real_crosslang.txt`` (target trials = Allison en vs Allison es).
* real recorded speech of verified voices from six more packages (:mod:`.real_voices`; KTuberling words,
  Fish Fillets dialogue, three Asterisk prompt sets, the ALSA test voice): 25 held-out speakers
  (``heldout_real_new.csv``, all pairs in ``trials_real_new.txt``, and with the held-out synthetic voices in
  ``trials_mixed.txt``) and 48 labels in the training pool (``train.csv`` rows with ``source=real``).
* synthetic speech from espeak-ng (languages x shipped voice variants x pitch / rate, plus randomly generated
  vocal tracts written as espeak-ng variant files) and flite (kal16, awb, slt, rms): the rest of the unlabeled
  training pool ``train.csv`` (``source=synthetic``) and held-out synthetic voices ``heldout_synth.csv`` /
  ``trials_synth.txt`` whose speakers do not occur in training.
* a "prosody style" task, a synthetic STAND-IN for emotion corpora (IEMOCAP / CREMA-D / MSP-Podcast):
  neutral / excited / sad / angry rendered with espeak-ng pitch level, pitch range, rate, voice quality and
  amplitude, split by voice (``prosody_train.csv`` / ``prosody_test.csv``).
* music for augmentation in MUSAN's layout: ``musan_standin/music/asterisk-moh/*.wav``.

The recorded voices are required: without their packages (no mirror and no ``.deb`` files in the cache) the
build stops with :class:`DemoCorpusUnavailable` saying what is missing.

Every file is mono 16-bit PCM at 16 kHz that went through 8 kHz (many recordings are 8 kHz telephone audio:
without the same band limit, bandwidth alone would tell sources, and synthetic from real speakers, apart),
lightly trimmed of leading / trailing silence and peak-normalised to a random level.

The build is deterministic given ``--seed``, cached (the ``.deb`` files live in ``~/.cache/dino-speech/debs``)
and idempotent: a complete corpus with the same settings is left untouched, and a build killed half-way is
resumed (every audio file is written atomically, so a file that exists is complete).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ...utils.atomic import write_text_atomic
from .config import BUILDER_VERSION, DemoCorpusConfig
from .debian import DemoCorpusUnavailable, default_cache_dir, fetch_debian_packages
from .files import STALE_PATTERN, file_lock, write_csv_atomic
from .readme import attribution, readme
from .real_voices import (
    SPEECH_PACKAGES,
    TABLE,
    VERIFIED_PACKAGES,
    asterisk_jobs,
    asterisk_sound_folders,
    check_packages,
    plan_verified_voices,
    read_table,
)
from .rendering import RenderJob, run_jobs
from .signal import telephone_band, trim_silence
from .synthesis import (
    PROSODY_LABELS,
    TRANSCRIPT_PACKAGES,
    SpeechTools,
    espeak_overlays,
    find_speech_tools,
    plan_voices,
    prosody_jobs,
    prosody_variant,
    read_transcript,
    sentences,
    shipped_variants,
    synth_jobs,
)
from .trial_lists import all_pairs, make_crosslang_trials, make_trials, write_trial_list

__all__ = [
    "BUILDER_VERSION",
    "PROSODY_LABELS",
    "DemoCorpusConfig",
    "DemoCorpusUnavailable",
    "SpeechTools",
    "build_demo_corpus",
    "corpus_is_complete",
    "corpus_packages",
    "default_cache_dir",
    "fetch_debian_packages",
    "find_speech_tools",
    "main",
    "make_trials",
    "telephone_band",
    "trim_silence",
]

#: The music-on-hold recordings (``-wav``: 8 kHz PCM), the MUSAN-layout music stand-in.
MUSIC_PACKAGE = "asterisk-moh-opsound-wav"

_MANIFESTS = [
    "train.csv", "heldout_real.csv", "heldout_real_new.csv", "heldout_synth.csv", "prosody_train.csv",
    "prosody_test.csv", "real_sources.csv",
]  # fmt: skip
_TRIALS = [
    "trials_real.txt",
    "trials_real_crosslang.txt",
    "trials_real_new.txt",
    "trials_mixed.txt",
    "trials_synth.txt",
]
#: Files and folders the builder owns inside ``--out``; only these are ever deleted.
_OWNED = [
    "wav", "musan_standin", "licenses", *_MANIFESTS, *_TRIALS, "voices.json", "README.md", "ATTRIBUTION.md",
    "corpus.json", ".build", ".demo_corpus_state.json",
]  # fmt: skip


def corpus_packages() -> list[str]:
    """The Debian packages the corpus is made of (the synthesisers, when fetched, come on top)."""
    return [*SPEECH_PACKAGES.values(), *TRANSCRIPT_PACKAGES.values(), MUSIC_PACKAGE, *VERIFIED_PACKAGES]


def corpus_is_complete(out: str | os.PathLike, cfg: DemoCorpusConfig | None = None) -> bool:
    """True when ``out`` holds a finished corpus (``corpus.json`` written last, every manifest and listed audio
    file present) built with the same settings as ``cfg`` (any settings when ``cfg`` is None)."""
    out = Path(out)
    try:
        meta = json.loads((out / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    if not meta.get("complete") or (cfg is not None and meta.get("settings_hash") != cfg.fingerprint()):
        return False
    for name in _MANIFESTS:
        path = out / name
        if not path.exists():
            return False
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if not (out / row["path"]).is_file():
                    return False
    music = meta.get("counts", {}).get("musan_standin", {}).get("files", 0)
    return all((out / t).exists() for t in _TRIALS) and len(list((out / "musan_standin").rglob("*.wav"))) == music


def _clean(out: Path) -> None:
    for name in _OWNED:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _split_stats(rows: list[tuple], speaker_col: int = 1, duration_col: int = 2) -> dict:
    return {
        "files": len(rows),
        "speakers": len({r[speaker_col] for r in rows}),
        "seconds": round(sum(r[duration_col] for r in rows), 1),
    }


def build_demo_corpus(cfg: DemoCorpusConfig, log=print) -> dict:
    """Build (or finish, or confirm) the demo corpus in ``cfg.out``.

    Returns:
        the content of ``corpus.json`` (settings, counts per split, seconds of audio, trials, tools), plus
        ``"skipped": True`` when a complete corpus with the same settings was already there.

    Raises:
        DemoCorpusUnavailable: packages or synthesisers cannot be obtained (the message says how to fix it).
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".lock"):
        if not cfg.force and corpus_is_complete(out, cfg):
            meta = json.loads((out / "corpus.json").read_text())
            log(f"Demo corpus in {out} is complete and built with the same settings: nothing to do.")
            return {**meta, "skipped": True}
        return _build(cfg, out, log)


def _build(cfg: DemoCorpusConfig, out: Path, log) -> dict:
    started = time.time()
    # The state file says "this folder is ours, built with these settings"; it outlives the build, so a later
    # run can tell a half-built (or damaged) corpus it may finish from a folder it must not touch.
    state_path = out / ".demo_corpus_state.json"
    state = None
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(state_path.read_text())
    foreign = [n for n in ("wav", "musan_standin") if (out / n).exists()]
    if cfg.force or (state is not None and state.get("settings_hash") != cfg.fingerprint()):
        log(f"Demo corpus in {out}: {'--force' if cfg.force else 'settings changed'}; rebuilding from scratch.")
        _clean(out)
    elif state is None and foreign:
        raise FileExistsError(
            f"{out} holds {', '.join(foreign)} but no demo-corpus state file; refusing to mix. "
            "Use an empty folder or pass --force (which deletes the builder's files there)."
        )
    elif state is not None:
        log(f"Demo corpus in {out}: incomplete (interrupted build?); finishing it, finished files are kept.")
    with contextlib.suppress(FileNotFoundError):
        (out / "corpus.json").unlink()  # from here on the folder is "being built"
    for stale in out.rglob(STALE_PATTERN):
        stale.unlink()
    (out / ".build").mkdir(exist_ok=True)
    write_text_atomic(
        state_path, json.dumps({"settings_hash": cfg.fingerprint(), **cfg.fingerprint_fields()}, indent=1) + "\n"
    )

    cache = Path(cfg.cache) if cfg.cache else default_cache_dir()
    log(f"Fetching Debian packages into {cache} (cached after the first run) ...")
    folders = fetch_debian_packages(corpus_packages(), cache)
    table = read_table()
    for note in check_packages(table, folders):
        log(f"Note: {note}")
    tools = find_speech_tools(cache, cfg.tools)
    log(f"espeak-ng: {tools.espeak} ({tools.espeak_version}); flite: {tools.flite}; source: {tools.source}")

    transcripts = {lang: read_transcript(folders[pkg], lang) for lang, pkg in TRANSCRIPT_PACKAGES.items()}
    texts = {lang: sentences(t) for lang, t in transcripts.items()}
    sounds = asterisk_sound_folders(folders)

    # One generator per part, so changing e.g. the number of trials does not change the audio.
    seeds = np.random.SeedSequence(cfg.seed).spawn(7)
    rng_voices, rng_synth, rng_real, rng_prosody, rng_trials, rng_music, rng_verified = (
        np.random.default_rng(s) for s in seeds
    )
    voices = plan_voices(cfg, rng_voices, shipped_variants(tools))

    train_jobs = [
        j for v in voices["train"] for j in synth_jobs(v, cfg.train_utterances, "synth", texts, cfg, rng_synth)
    ]
    heldout_jobs = [
        j for v in voices["heldout"] for j in synth_jobs(v, cfg.heldout_utterances, "synth", texts, cfg, rng_synth)
    ]
    prosody = [
        (v, job, label)
        for v in voices["prosody"]
        for job, label in prosody_jobs(v, cfg.prosody_utterances, texts, cfg, rng_prosody)
    ]
    real = asterisk_jobs(sounds, transcripts, cfg, rng_real)
    planning = time.time()
    verified = plan_verified_voices(table, folders, cfg, rng_verified)
    log(
        f"Recorded voices: {len(verified)} utterances planned from {TABLE.name} ({len(table)} files, "
        f"{time.time() - planning:.0f} s to measure them)"
    )
    music_src = sorted(folders[MUSIC_PACKAGE].glob("usr/share/asterisk/moh/*.wav"))
    music_jobs = [
        RenderJob(
            f"musan_standin/music/asterisk-moh/{p.name}",
            "file",
            float(rng_music.uniform(-12.0, -3.0)),
            source=str(p),
            trim=False,
            max_seconds=cfg.music_max_seconds,
        )
        for p in music_src
    ]

    variants = {v.params["variant"]: v.variant_file for g in ("train", "heldout") for v in voices[g] if v.variant_file}
    for v in voices["prosody"]:
        for label in PROSODY_LABELS:
            variants[f"{v.params['variant']}_{label}"] = prosody_variant(v, label)
    all_jobs = [*train_jobs, *heldout_jobs, *(j for _, j, _ in prosody), *(j for j, _, _ in real), *music_jobs]
    all_jobs += [u.job for u in verified]
    overlays = espeak_overlays(tools, out / ".build" / "espeak", [j.variant for j in all_jobs if j.variant], variants)
    all_jobs = [
        dataclasses.replace(j, args=(f"--path={overlays[j.variant]}", *j.args)) if j.variant else j for j in all_jobs
    ]
    durations = run_jobs(all_jobs, out, tools, cfg.workers, log)
    planned = {out / j.out for j in all_jobs}
    for folder in ("wav", "musan_standin"):  # leftovers of an older plan (e.g. another builder version)
        for path in (out / folder).rglob("*.wav"):
            if path not in planned:
                path.unlink()

    def speaker_of(job: RenderJob) -> str:
        return job.out.split("/")[2]

    lang_of = {v.voice_id: v.language for g in voices.values() for v in g}
    train_rows = [(j.out, speaker_of(j), durations[j.out], "synthetic") for j in train_jobs]
    train_rows += [(u.job.out, u.speaker, durations[u.job.out], "real") for u in verified if u.split == "train"]
    new_rows = [
        (u.job.out, u.speaker, durations[u.job.out], u.language, u.source) for u in verified if u.split == "heldout"
    ]
    source_rows = [(u.job.out, u.split, u.members[0].package, ";".join(m.path for m in u.members)) for u in verified]
    heldout_rows = [(j.out, speaker_of(j), durations[j.out], lang_of[speaker_of(j)]) for j in heldout_jobs]
    real_rows = [(j.out, spk, durations[j.out], lang) for j, spk, lang in real]
    n_ptrain = cfg.prosody_train_voices
    prosody_train_ids = {v.voice_id for v in voices["prosody"][:n_ptrain]}
    prosody_rows = {"train": [], "test": []}
    for v, j, label in prosody:
        prosody_rows["train" if v.voice_id in prosody_train_ids else "test"].append(
            (j.out, label, v.voice_id, durations[j.out])
        )

    write_csv_atomic(out / "train.csv", ["path", "speaker", "duration", "source"], train_rows)
    write_csv_atomic(out / "heldout_real_new.csv", ["path", "speaker", "duration", "language", "source"], new_rows)
    write_csv_atomic(out / "real_sources.csv", ["path", "split", "package", "files"], source_rows)
    write_csv_atomic(out / "heldout_synth.csv", ["path", "speaker", "duration", "language"], heldout_rows)
    write_csv_atomic(out / "heldout_real.csv", ["path", "speaker", "duration", "language"], real_rows)
    write_csv_atomic(out / "prosody_train.csv", ["path", "label", "speaker", "duration"], prosody_rows["train"])
    write_csv_atomic(out / "prosody_test.csv", ["path", "label", "speaker", "duration"], prosody_rows["test"])

    def by_speaker(rows) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for row in sorted(rows):
            groups.setdefault(row[1], []).append(row[0])
        return groups

    real_by_spk = by_speaker(real_rows)
    trials = {
        "trials_real.txt": make_trials(real_by_spk, cfg.trials_real, rng_trials),
        "trials_synth.txt": make_trials(by_speaker(heldout_rows), cfg.trials_synth, rng_trials),
        "trials_real_crosslang.txt": make_crosslang_trials(
            sorted(r[0] for r in real_rows if r[1] == "allison_smith" and r[3] == "en"),
            sorted(r[0] for r in real_rows if r[1] == "allison_smith" and r[3] == "es"),
            {s: f for s, f in real_by_spk.items() if s != "allison_smith"},
            cfg.trials_crosslang,
            rng_trials,
        ),
        "trials_real_new.txt": all_pairs({r[0]: r[1] for r in new_rows}),
        "trials_mixed.txt": all_pairs({r[0]: r[1] for r in [*new_rows, *heldout_rows]}),
    }
    for name, lst in trials.items():
        write_trial_list(out / name, lst)

    licenses = out / "licenses"
    licenses.mkdir(exist_ok=True)
    for pkg in (SPEECH_PACKAGES["en"], MUSIC_PACKAGE, *VERIFIED_PACKAGES):
        src = folders[pkg] / "usr" / "share" / "doc" / pkg / "copyright"
        if src.exists():
            shutil.copyfile(src, licenses / f"{pkg}.copyright")

    music_rows = [(j.out, "music", durations[j.out]) for j in music_jobs]
    counts = {
        "train": _split_stats(train_rows),
        "train_synthetic": _split_stats([r for r in train_rows if r[3] == "synthetic"]),
        "train_real": _split_stats([r for r in train_rows if r[3] == "real"]),
        "heldout_real_new": _split_stats(new_rows),
        "heldout_synth": _split_stats(heldout_rows),
        "heldout_real": _split_stats(real_rows),
        "prosody_train": _split_stats(prosody_rows["train"], speaker_col=2, duration_col=3),
        "prosody_test": _split_stats(prosody_rows["test"], speaker_col=2, duration_col=3),
        "musan_standin": {"files": len(music_rows), "seconds": round(sum(r[2] for r in music_rows), 1)},
        "trials": {
            n: {"target": sum(t[0] for t in lst), "nontarget": sum(1 - t[0] for t in lst)} for n, lst in trials.items()
        },
    }
    counts["heldout_real_new"]["languages"] = len({r[3] for r in new_rows})
    counts["verified"] = {}
    for u in verified:
        counts["verified"].setdefault(u.split, {}).setdefault(u.source, []).append(
            (u.job.out, u.speaker, durations[u.job.out])
        )
    for split, by_source in counts["verified"].items():
        counts["verified"][split] = {source: _split_stats(rows) for source, rows in sorted(by_source.items())}
    counts["total_seconds"] = round(sum(durations.values()), 1)
    voices_doc = {
        group: [
            {
                "speaker": v.voice_id,
                "engine": v.engine,
                "language": v.language,
                "text_language": v.text_language,
                **{k: v.params[k] for k in sorted(v.params)},
            }
            for v in lst
        ]
        for group, lst in voices.items()
    }
    write_text_atomic(out / "voices.json", json.dumps(voices_doc, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out / "README.md", readme(cfg, counts))
    write_text_atomic(out / "ATTRIBUTION.md", attribution(cfg.music_max_seconds is not None))

    meta = {
        "complete": True,
        "builder_version": BUILDER_VERSION,
        "settings": cfg.fingerprint_fields(),
        "settings_hash": cfg.fingerprint(),
        "counts": counts,
        "tools": {"espeak-ng": tools.espeak_version, "flite_voices": list(tools.flite_voices), "source": tools.source},
        "debian_packages": sorted(p.name for p in folders.values()),
        "build_seconds": round(time.time() - started, 1),
    }
    shutil.rmtree(out / ".build", ignore_errors=True)
    write_text_atomic(out / "corpus.json", json.dumps(meta, indent=1) + "\n")  # last: marks the build complete
    log(
        f"Demo corpus ready in {out} ({meta['build_seconds']} s): train {counts['train']['files']} files / "
        f"{counts['train']['speakers']} voices (recorded: {counts['train_real']['files']} / "
        f"{counts['train_real']['speakers']}), held-out synthetic {counts['heldout_synth']['files']} / "
        f"{counts['heldout_synth']['speakers']}, Asterisk voices {counts['heldout_real']['files']} / "
        f"{counts['heldout_real']['speakers']}, held-out recorded {counts['heldout_real_new']['files']} / "
        f"{counts['heldout_real_new']['speakers']}, prosody {counts['prosody_train']['files']} + "
        f"{counts['prosody_test']['files']}, {counts['total_seconds'] / 3600:.2f} h of audio."
    )
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech demo-corpus",
        description="Assemble the offline demo corpus (real Asterisk voices + espeak-ng / flite voices).",
    )
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument(
        "--cache", default=None, help=f"folder for the Debian packages (default: {default_cache_dir()})"
    )
    parser.add_argument("--quick", action="store_true", help="tiny subset for tests (seconds to build)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes (default: 2)")
    parser.add_argument(
        "--tools",
        choices=("auto", "system", "local"),
        default="auto",
        help="espeak-ng/flite: system binaries if present (auto), only system, or fetched without root (local)",
    )
    parser.add_argument("--force", action="store_true", help="delete the builder's files in --out and rebuild")
    args = parser.parse_args(argv)
    make = DemoCorpusConfig.quick_preset if args.quick else DemoCorpusConfig
    cfg = make(out=args.out, cache=args.cache, seed=args.seed, workers=args.workers, tools=args.tools, force=args.force)
    try:
        build_demo_corpus(cfg)
    except DemoCorpusUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
