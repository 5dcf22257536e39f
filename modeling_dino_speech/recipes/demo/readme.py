"""The ``README.md`` and ``ATTRIBUTION.md`` the builder writes into the corpus folder: what each file is, where
every recording comes from, who made it and under which licence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import BUILDER_VERSION
from .real_voices import REAL_CREDITS, SOURCES, VERIFIED_CREDITS, VERIFIED_PACKAGES
from .synthesis import ESPEAK_LANGUAGES

if TYPE_CHECKING:
    from .config import DemoCorpusConfig

__all__ = ["MUSIC_CREDITS", "attribution", "readme"]

MUSIC_CREDITS = [
    ("macroform-cold_day, macroform-robot_dity, macroform-the_simplicity", "Paul Shuler (Macroform), 2009"),
    ("manolo_camp-morning_coffee", "Manolo Camp, 2009"),
    ("reno_project-system", "Reno Project, 2008"),
]


def _verified_table(c: dict) -> str:
    """Per source: held-out speakers / utterances / minutes and training labels / utterances / minutes."""
    lines = []
    for source in dict.fromkeys(SOURCES.values()):
        packages = ", ".join(f"`{p}`" for p, s in SOURCES.items() if s == source)
        cells = []
        for split in ("heldout", "train"):
            st = c["verified"].get(split, {}).get(source)
            cells.append(f"{st['speakers']} / {st['files']} / {st['seconds'] / 60:.1f}" if st else "–")
        lines.append(f"| {source} ({packages}) | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def readme(cfg: DemoCorpusConfig, counts: dict) -> str:
    c = counts
    t = {name: f"{v['target']} target + {v['nontarget']} non-target" for name, v in c["trials"].items()}
    real_share = c["train_real"]["seconds"] / max(c["train"]["seconds"], 1e-9)
    return f"""# dino-speech demo corpus

Built by `dino-speech demo-corpus` (builder {BUILDER_VERSION}, seed {cfg.seed},
{"QUICK test subset" if cfg.quick else "full"} build). Every file: mono, 16 kHz, 16-bit PCM, resampled to 8 kHz
and back (telephone band, < 4 kHz), leading/trailing silence trimmed lightly, peak-normalised to a random level
between -12 and -1 dBFS. All paths in the CSV files and trial lists are relative to this folder.

## What it is

| file | content |
|---|---|
| `train.csv` (path,speaker,duration,source) | unlabeled training pool: {c["train"]["files"]} utterances, {c["train"]["seconds"] / 3600:.2f} h: {c["train_synthetic"]["files"]} of {c["train_synthetic"]["speakers"]} synthetic voices (espeak-ng and flite, `source=synthetic`) and {c["train_real"]["files"]} ({c["train_real"]["seconds"] / 60:.1f} min, {100 * real_share:.0f} % of the audio) of {c["train_real"]["speakers"]} recorded voice labels (`source=real`, see below). The `speaker` column is the true voice (for recordings: the verified label), kept ONLY to report cluster purity; training must not read it |
| `heldout_synth.csv`, `trials_synth.txt` | {c["heldout_synth"]["files"]} utterances of {c["heldout_synth"]["speakers"]} held-out synthetic voices (none of them in `train.csv`); {t["trials_synth.txt"]} trials |
| `heldout_real.csv` (path,speaker,duration,language), `trials_real.txt` | {c["heldout_real"]["files"]} real recordings of {c["heldout_real"]["speakers"]} voices (Asterisk prompts): Allison Smith (en + es, one speaker), June Wallack (fr), Carlo Flora (it), a female Russian voice; {t["trials_real.txt"]} trials |
| `trials_real_crosslang.txt` | targets = Allison in English vs Allison in Spanish only; non-targets = Allison vs the other Asterisk voices ({t["trials_real_crosslang.txt"]}) |
| `heldout_real_new.csv` (path,speaker,duration,language,source), `trials_real_new.txt` | {c["heldout_real_new"]["files"]} utterances of {c["heldout_real_new"]["speakers"]} held-out recorded speakers in {c["heldout_real_new"]["languages"]} languages (KTuberling volunteers, Fish Fillets actors, Asterisk prompt voices, the ALSA voice; see below); all pairs: {t["trials_real_new.txt"]} trials |
| `trials_mixed.txt` | all pairs over `heldout_real_new.csv` and `heldout_synth.csv`: recorded speakers and speech-synthesis voices together, all telephone band ({t["trials_mixed.txt"]} trials) |
| `real_sources.csv` (path,split,package,files) | the package files (relative to the package's sound folder, `;`-separated, in joining order) inside every utterance of the recorded voices in `heldout_real_new.csv` and `train.csv` |
| `prosody_train.csv`, `prosody_test.csv` (path,label,speaker,duration) | the prosody-style task, see below ({c["prosody_train"]["files"]} / {c["prosody_test"]["files"]} utterances, {c["prosody_train"]["speakers"]} / {c["prosody_test"]["speakers"]} voices, split by voice) |
| `musan_standin/music/asterisk-moh/*.wav` | {c["musan_standin"]["files"]} music-on-hold pieces ({c["musan_standin"]["seconds"]} s) in MUSAN's `music/` layout, for additive-music augmentation |
| `voices.json` | the parameters of every synthetic voice (engine, language, variant, pitch, rate, generated vocal tract) |
| `corpus.json` | build settings, counts, seconds of audio, tool versions; written last (its presence = a complete build) |
| `ATTRIBUTION.md`, `licenses/` | credits and licences of the recordings and music |

Trial lists use the VoxCeleb format `1 enroll.wav test.wav` (1 = same speaker, 0 = different). `trials_synth.txt`,
`trials_real.txt` and `trials_real_crosslang.txt` are balanced samples; `trials_real_new.txt` and
`trials_mixed.txt` hold every pair once (far more non-target than target trials). The paths are the same strings
as the `path` column of the CSVs. No speaker of a held-out list occurs in `train.csv`.

Synthetic voices. espeak-ng: {len(ESPEAK_LANGUAGES)} languages x voice variants x pitch / rate / word gap; half of the
training voices use espeak-ng's shipped variants, the other half (and every held-out voice) a randomly generated
variant file (pitch base and range, vocal-tract length via formant frequency scaling, formant bandwidths,
flutter, roughness, breathiness). flite: kal16, awb, slt in training, rms held out. The voices read sentences
from the Asterisk prompt transcripts (en, es, fr, it, ru); voices of other languages read a related language's
text with their own accent. Utterances are {cfg.min_seconds:g}-{cfg.max_seconds:g} s.

## Recorded voices

**The Asterisk core voices** (`heldout_real.csv`) are held out and never trained on: prompts of
{cfg.real_min_seconds:g}-{cfg.real_max_seconds:g} s, {cfg.real_utterances_per_language} per language.

**The verified voices** come from six more Debian packages. Which file belongs to which speaker label, and to
which side of the split, is fixed by the table `real_voices.csv` that ships with dino-speech
(`modeling_dino_speech/recipes/demo/`); files it does not list (duplicates, non-speech, voices too small to use,
possible held-out actors, the held-out reserve) are never used. Speakers / utterances / minutes:

| source (packages) | held out (`heldout_real_new.csv`) | training (`train.csv`, `source=real`) |
|---|---|---|
{_verified_table(c)}

Utterances. KTuberling and ALSA recordings are single words: each word is trimmed and brought to one level, the
words of a speaker are shuffled (seeded) and joined with {cfg.joined_gap_seconds:g} s of silence into
pseudo-utterances of at least {cfg.joined_min_seconds:g} s. Held-out Fillets and prompt lines of
{cfg.line_min_seconds:g}-{cfg.line_max_seconds:g} s are single utterances. At most {cfg.real_new_per_speaker}
held-out utterances per speaker (a few small languages give only 1-5). In training, Fillets and prompt lines are
kept as they are, and lines shorter than {cfg.join_below_seconds:g} s are joined like the words. Stereo files are
downmixed over the channels that carry signal, decoded peaks above full scale are scaled down, and then every
file gets the same telephone band and random level as the rest of the corpus.

How the speaker labels were verified. The labels come from an analysis made for this corpus: recording metadata
and file names (KTuberling: the game theme of each word, from the `<lang>.soundtheme` files, with sampling rate
and channels, which shows that several languages were recorded in sessions with different voices: da, ru and en
hold two voices each, fr, uk and ca more than one), checked with a supervised speaker encoder (resemblyzer, used
only as an analysis tool, never by the builder or in training) and with F0. Nobody listened to the files. What
could not be verified: whether one person recorded several languages (the encoder cannot tell this apart from
two similar voices), nor the identities among several high, probably children's, KTuberling voices (fi, nl, sr,
da, gl), which resemble one another: some non-target trials of `trials_real_new.txt` may pair one person in two
languages; such speakers all sit on the held-out side, none in training. Which Fillets actor voices which minor character is unknown; the
characters that sound as close to one of the two held-out fish as a same-actor pair are excluded, a few of the
remaining ones are only a little below that threshold. The number of voices in ca (2-4) and uk (1-2) is
uncertain; they are in training, where the labels only score clusters. That core es is Allison Smith comes from
the packages; the audio is consistent with it.

## Prosody style: a synthetic STAND-IN for emotion recognition

No labelled emotional speech can be had offline, so this task is a clearly synthetic stand-in for IEMOCAP,
CREMA-D and MSP-Podcast, NOT emotion data. Labels neutral / excited / sad / angry are renderings of espeak-ng
settings over several generated voices: pitch level and pitch range (written into the voice's variant file),
speaking rate (`-s`), amplitude (`-a`; peak normalisation afterwards removes loudness as a cue) and voice
quality (flutter, roughness, breathiness), with per-utterance jitter. Train and test voices are disjoint.
Scores on it show whether embeddings keep prosodic information; they say nothing about real emotions.

## What it is not

Small: numbers on it are a smoke test of the method, not comparable with VoxCeleb, IEMOCAP, CREMA-D or
MSP-Podcast results. The training pool is mostly synthetic; its recorded part is a few dozen voices, many of them
single words. The four Asterisk voices differ in language and recording studio as well as in speaker, so
`trials_real.txt` rewards language / channel cues; `trials_real_crosslang.txt` (same speaker across two
languages) is the truer speaker test. The held-out recorded speakers of `trials_real_new.txt` are more numerous
but still few (25), so a speaker-level confidence interval on them is wide (several EER points). The synthetic
voices come from two engines and are much less varied than real people.

## Rebuilding, and the tools

Re-running the builder with the same settings does nothing; a killed build resumes. `--quick` builds a tiny
subset for tests. The Debian packages are cached in `~/.cache/dino-speech/debs` (`--cache`). espeak-ng and
flite: `sudo apt-get install -y espeak-ng flite`; without root the builder fetches them itself with
`apt-get download` + `dpkg -x` into the cache and runs them with `LD_LIBRARY_PATH` and espeak-ng's `--path`
pointing there (`--tools local` forces this).
"""


def attribution(music_cropped: bool) -> str:
    rows = "\n".join(f"| `{spk}` | {who} | {langs} | {lic} |" for spk, (who, lic, langs) in REAL_CREDITS.items())
    verified = "\n".join(
        f"| `{pkg}` (`{VERIFIED_PACKAGES[pkg]}`) | {what} | {who} | {lic} |"
        for pkg, (what, who, lic) in VERIFIED_CREDITS.items()
    )
    music = "\n".join(f"- {files}: {who}" for files, who in MUSIC_CREDITS)
    return f"""# Attribution

## Recorded speech: the Asterisk core voices (folder `wav/real/`)

The Asterisk "core sounds" voice prompts, from the Debian packages
`asterisk-core-sounds-{{en,es,fr,it,ru}}-wav` (upstream: http://downloads.asterisk.org/pub/telephony/sounds/).

| speaker label | recorded by | languages | licence |
|---|---|---|---|
{rows}

Allison Smith's recordings: financial contributions by Digium, Inc. French translation by Clod Patry,
Kristopher Lalletti and June Wallack (contributions by Digium, Unlimitel, BGM Informatique). Italian translation
by Silvia Petrin. Licences: CC-BY-SA-3.0 (https://creativecommons.org/licenses/by-sa/3.0/) and CC-BY-3.0
(https://creativecommons.org/licenses/by/3.0/); full texts in `licenses/` (the packages' copyright files).

## Recorded speech: the verified voices (folders `wav/real_new/`, `wav/real_train/`)

As the packages' `copyright` files (and, for es-co, its `LEEME`) state them; each file is copied to
`licenses/<package>.copyright`. `real_sources.csv` names the package files inside every output file.

| package (sound folder) | recordings | credit | licence |
|---|---|---|---|
{verified}

The Italian prompts' licence asks that their users be told visibly that the sound files were made by Marco
Menardi and his wife (Paola Dal Zot, the voice), and where to get them: http://www.voip.ammdomus.it. GPL-2:
https://www.gnu.org/licenses/old-licenses/gpl-2.0.html; CC-BY-SA-3.0-IT:
https://creativecommons.org/licenses/by-sa/3.0/it/.

## Music (folder `musan_standin/music/asterisk-moh/`)

From the Debian package `asterisk-moh-opsound-wav`, CC-BY-SA-3.0 (distributed "through explicit permission
from their authors"):
{music}

## Changes made

The works were modified: selected, downmixed to mono, resampled to 8 kHz and to 16 kHz, trimmed of leading and
trailing silence, level-normalised; single words and short lines of one speaker were joined into longer
utterances with short silences between them{"; the music was cropped" if music_cropped else ""}. The modified
files are distributed under the same licences.

## Synthetic speech

Generated with espeak-ng (GPL-3.0-or-later) and flite (BSD-style, CMU) from the Asterisk prompt transcripts
(packages `asterisk-core-sounds-{{en,es,fr,it,ru}}`, same licences as the recordings).
"""
