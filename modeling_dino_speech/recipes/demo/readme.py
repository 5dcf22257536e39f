"""The ``README.md`` and ``ATTRIBUTION.md`` the builder writes into the corpus folder: what each file is, where
every recording comes from, who made it and under which licence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import BUILDER_VERSION
from .real_voices import REAL_CREDITS
from .synthesis import ESPEAK_LANGUAGES

if TYPE_CHECKING:
    from .config import DemoCorpusConfig

__all__ = ["MUSIC_CREDITS", "attribution", "readme"]

MUSIC_CREDITS = [
    ("macroform-cold_day, macroform-robot_dity, macroform-the_simplicity", "Paul Shuler (Macroform), 2009"),
    ("manolo_camp-morning_coffee", "Manolo Camp, 2009"),
    ("reno_project-system", "Reno Project, 2008"),
]


def readme(cfg: DemoCorpusConfig, counts: dict) -> str:
    c = counts
    return f"""# dino-speech demo corpus

Built by `dino-speech demo-corpus` (builder {BUILDER_VERSION}, seed {cfg.seed},
{"QUICK test subset" if cfg.quick else "full"} build). Every file: mono, 16 kHz, 16-bit PCM, resampled to 8 kHz
and back (telephone band, < 4 kHz), leading/trailing silence trimmed lightly, peak-normalised to a random level
between -12 and -1 dBFS. All paths in the CSV files and trial lists are relative to this folder.

## What it is

| file | content |
|---|---|
| `train.csv` (path,speaker,duration) | unlabeled training pool: {c["train"]["files"]} utterances of {c["train"]["speakers"]} synthetic voices (espeak-ng and flite). The `speaker` column is the true voice, kept ONLY to report cluster purity; training must not read it |
| `heldout_synth.csv`, `trials_synth.txt` | {c["heldout_synth"]["files"]} utterances of {c["heldout_synth"]["speakers"]} held-out synthetic voices (none of them in `train.csv`); {c["trials"]["trials_synth.txt"]["target"]} target + {c["trials"]["trials_synth.txt"]["nontarget"]} non-target trials |
| `heldout_real.csv` (path,speaker,duration,language), `trials_real.txt` | {c["heldout_real"]["files"]} real recordings of {c["heldout_real"]["speakers"]} voices (Asterisk prompts): Allison Smith (en + es, one speaker), June Wallack (fr), Carlo Flora (it), a female Russian voice; {c["trials"]["trials_real.txt"]["target"]} + {c["trials"]["trials_real.txt"]["nontarget"]} trials |
| `trials_real_crosslang.txt` | targets = Allison in English vs Allison in Spanish only; non-targets = Allison vs the other real voices ({c["trials"]["trials_real_crosslang.txt"]["target"]} + {c["trials"]["trials_real_crosslang.txt"]["nontarget"]}) |
| `prosody_train.csv`, `prosody_test.csv` (path,label,speaker,duration) | the prosody-style task, see below ({c["prosody_train"]["files"]} / {c["prosody_test"]["files"]} utterances, {c["prosody_train"]["speakers"]} / {c["prosody_test"]["speakers"]} voices, split by voice) |
| `musan_standin/music/asterisk-moh/*.wav` | {c["musan_standin"]["files"]} music-on-hold pieces ({c["musan_standin"]["seconds"]} s) in MUSAN's `music/` layout, for additive-music augmentation |
| `voices.json` | the parameters of every synthetic voice (engine, language, variant, pitch, rate, generated vocal tract) |
| `corpus.json` | build settings, counts, seconds of audio, tool versions; written last (its presence = a complete build) |
| `ATTRIBUTION.md`, `licenses/` | credits and licences of the recordings and music |

Trial lists use the VoxCeleb format `1 enroll.wav test.wav` (1 = same speaker, 0 = different); they are balanced.
The paths are the same strings as the `path` column of the CSVs.

Synthetic voices. espeak-ng: {len(ESPEAK_LANGUAGES)} languages x voice variants x pitch / rate / word gap; half of the
training voices use espeak-ng's shipped variants, the other half (and every held-out voice) a randomly generated
variant file (pitch base and range, vocal-tract length via formant frequency scaling, formant bandwidths,
flutter, roughness, breathiness). flite: kal16, awb, slt in training, rms held out. The voices read sentences
from the Asterisk prompt transcripts (en, es, fr, it, ru); voices of other languages read a related language's
text with their own accent. Utterances are {cfg.min_seconds:g}-{cfg.max_seconds:g} s.

## Prosody style: a synthetic STAND-IN for emotion recognition

No labelled emotional speech can be had offline, so this task is a clearly synthetic stand-in for IEMOCAP,
CREMA-D and MSP-Podcast, NOT emotion data. Labels neutral / excited / sad / angry are renderings of espeak-ng
settings over several generated voices: pitch level and pitch range (written into the voice's variant file),
speaking rate (`-s`), amplitude (`-a`; peak normalisation afterwards removes loudness as a cue) and voice
quality (flutter, roughness, breathiness), with per-utterance jitter. Train and test voices are disjoint.
Scores on it show whether embeddings keep prosodic information; they say nothing about real emotions.

## What it is not

Small, and mostly synthetic: numbers on it are a smoke test of the method, not comparable with VoxCeleb,
IEMOCAP, CREMA-D or MSP-Podcast results. The four real voices differ in language and recording studio as well
as in speaker, so `trials_real.txt` rewards language / channel cues; `trials_real_crosslang.txt` (same speaker
across two languages) is the truer speaker test. The synthetic voices come from two engines and are much less
varied than real people.

## Rebuilding, and the tools

Re-running the builder with the same settings does nothing; a killed build resumes. `--quick` builds a tiny
subset for tests. The Debian packages are cached in `~/.cache/dino-speech/debs` (`--cache`). espeak-ng and
flite: `sudo apt-get install -y espeak-ng flite`; without root the builder fetches them itself with
`apt-get download` + `dpkg -x` into the cache and runs them with `LD_LIBRARY_PATH` and espeak-ng's `--path`
pointing there (`--tools local` forces this).
"""


def attribution(music_cropped: bool) -> str:
    rows = "\n".join(f"| `{spk}` | {who} | {langs} | {lic} |" for spk, (who, lic, langs) in REAL_CREDITS.items())
    music = "\n".join(f"- {files}: {who}" for files, who in MUSIC_CREDITS)
    return f"""# Attribution

## Recorded speech (folder `wav/real/`)

The Asterisk "core sounds" voice prompts, from the Debian packages
`asterisk-core-sounds-{{en,es,fr,it,ru}}-wav` (upstream: http://downloads.asterisk.org/pub/telephony/sounds/).

| speaker label | recorded by | languages | licence |
|---|---|---|---|
{rows}

Allison Smith's recordings: financial contributions by Digium, Inc. French translation by Clod Patry,
Kristopher Lalletti and June Wallack (contributions by Digium, Unlimitel, BGM Informatique). Italian translation
by Silvia Petrin. Licences: CC-BY-SA-3.0 (https://creativecommons.org/licenses/by-sa/3.0/) and CC-BY-3.0
(https://creativecommons.org/licenses/by/3.0/); full texts in `licenses/` (the packages' copyright files).

## Music (folder `musan_standin/music/asterisk-moh/`)

From the Debian package `asterisk-moh-opsound-wav`, CC-BY-SA-3.0 (distributed "through explicit permission
from their authors"):
{music}

## Changes made

The works were modified: selected, resampled to 8 kHz and to 16 kHz, trimmed of leading and trailing silence,
level-normalised{"; the music was cropped" if music_cropped else ""}. The modified files are distributed under the same licences.

## Synthetic speech

Generated with espeak-ng (GPL-3.0-or-later) and flite (BSD-style, CMU) from the Asterisk prompt transcripts
(packages `asterisk-core-sounds-{{en,es,fr,it,ru}}`, same licences as the recordings).
"""
