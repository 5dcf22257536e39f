"""Corpus loaders on small fixture trees that reproduce the official layouts and file formats."""

import numpy as np
import pytest
import soundfile as sf

from modeling_dino_speech.data.corpora import (
    compute_durations,
    load_audio_folder,
    load_cremad,
    load_iemocap,
    load_manifest,
    load_msp_podcast,
    load_voxceleb,
)
from modeling_dino_speech.data.trials import read_trials

SR = 16000


def _wav(path, seconds=0.2, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path, (0.1 * np.random.default_rng(len(str(path))).standard_normal(int(seconds * sr))).astype(np.float32), sr
    )
    return path


# --------------------------------------------------------------------------------------------- VoxCeleb


@pytest.fixture
def voxceleb(tmp_path):
    root = tmp_path / "vox1"
    for speaker, videos in (("id10270", ("5r0dWxy17C8", "x6uYqmx31kE")), ("id10300", ("ize_eiCFEg0",))):
        for video in videos:
            for n in (1, 2):
                _wav(root / "wav" / speaker / video / f"{n:05d}.wav", seconds=0.1 * n)
    (root / "veri_test2.txt").write_text(
        "1 id10270/5r0dWxy17C8/00001.wav id10270/x6uYqmx31kE/00002.wav\n"
        "0 id10270/5r0dWxy17C8/00001.wav id10300/ize_eiCFEg0/00001.wav\n"
    )
    return root


def test_voxceleb_layout_and_trial_keys(voxceleb):
    ds = load_voxceleb(voxceleb)  # the parent holding wav/ is accepted
    assert len(ds) == 6
    assert sorted(set(ds["speaker"])) == ["id10270", "id10300"]
    row = ds[0]
    assert row["utterance"] == "id10270/5r0dWxy17C8/00001.wav"
    assert row["path"].endswith("wav/id10270/5r0dWxy17C8/00001.wav") and row["path"].startswith("/")
    assert row["duration"] == pytest.approx(0.1)
    assert row["video"] == "5r0dWxy17C8"
    # Trial keys match the utterance column.
    trials = read_trials(voxceleb / "veri_test2.txt", audio_root=voxceleb / "wav", check_files=True)
    keys = set(ds["utterance"])
    assert all(t.enroll.split("wav/", 1)[1] in keys for t in trials)
    assert len(load_voxceleb(voxceleb / "wav", durations=False).column_names) == 4


def test_voxceleb_m4a_only_and_empty(tmp_path):
    m4a = tmp_path / "vox2" / "id00012" / "21Uxsk56VDQ" / "00001.m4a"
    m4a.parent.mkdir(parents=True)
    m4a.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="only .m4a.*convert"):
        load_voxceleb(tmp_path / "vox2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no idXXXXX"):
        load_voxceleb(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope: VoxCeleb folder does not exist"):
        load_voxceleb(tmp_path / "nope")


def test_bad_audio_is_named_all_at_once_or_skipped(voxceleb):
    bad1 = voxceleb / "wav" / "id10300" / "ize_eiCFEg0" / "00003.wav"
    bad1.write_bytes(b"")
    bad2 = voxceleb / "wav" / "id10300" / "ize_eiCFEg0" / "00004.wav"
    bad2.write_bytes(b"RIFFxxxxWAVEjunk")
    with pytest.raises(ValueError, match="2 unusable") as err:
        load_voxceleb(voxceleb)
    assert "00003.wav: empty file" in str(err.value) and "00004.wav: unreadable" in str(err.value)
    ds = load_voxceleb(voxceleb, on_error="skip")
    assert len(ds) == 6 and all(d > 0 for d in ds["duration"])


# --------------------------------------------------------------------------------------------- CREMA-D


def test_cremad(tmp_path):
    root = tmp_path / "CREMA-D"
    names = [
        "1001_DFA_ANG_XX",
        "1001_IEO_HAP_HI",
        "1091_TSI_NEU_XX",
        "1002_ITH_SAD_LO",
        "1002_WSI_FEA_MD",
        "1003_DFA_DIS_XX",
    ]
    for name in names:
        _wav(root / "AudioWAV" / f"{name}.wav")
    ds = load_cremad(root)
    assert len(ds) == 6
    row = ds[ds["path"].index(str(root / "AudioWAV" / "1001_IEO_HAP_HI.wav"))]
    assert (row["speaker"], row["sentence"], row["label"], row["level"]) == ("1001", "IEO", "happy", "high")
    assert sorted(set(ds["label"])) == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    _wav(root / "AudioWAV" / "1004_DFA_XYZ_XX.wav")
    _wav(root / "AudioWAV" / "notes.wav")
    with pytest.raises(ValueError, match="(?s)2 file name.*1004_DFA_XYZ_XX.wav.*notes.wav"):
        load_cremad(root)
    assert len(load_cremad(root, on_error="skip")) == 6


# --------------------------------------------------------------------------------------------- IEMOCAP

IEMOCAP_EVAL = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_F001\texc\t[3.5000, 3.5000, 3.0000]
C-E2:\tExcited;\t()

[14.8872 - 18.0175]\tSes01F_impro01_M000\tfru\t[2.0000, 3.5000, 3.5000]

[19.2900 - 20.7875]\tSes01F_impro01_M001\tang\t[1.5000, 4.0000, 4.0000]

[21.7000 - 23.0000]\tSes01F_impro01_F002\thap\t[4.0000, 3.0000, 3.0000]
"""


@pytest.fixture
def iemocap(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    for session in (1, 2):
        text = IEMOCAP_EVAL.replace("Ses01", f"Ses0{session}")
        evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"Ses0{session}F_impro01.txt"
        evaluation.parent.mkdir(parents=True)
        evaluation.write_text(text)
        (evaluation.parent / "Categorical").mkdir()  # sub-folders of per-annotator files are not evaluations
        (evaluation.parent / "Categorical" / f"Ses0{session}F_impro01_e2_cat.txt").write_text("junk\n")
        for utt in ("F000", "F001", "M000", "M001", "F002"):
            name = f"Ses0{session}F_impro01_{utt}"
            _wav(root / f"Session{session}" / "sentences" / "wav" / f"Ses0{session}F_impro01" / f"{name}.wav")
    return root


def test_iemocap_four_classes_sessions_and_dimensions(iemocap):
    ds = load_iemocap(iemocap)
    assert len(ds) == 8  # fru dropped in each of 2 sessions
    assert sorted(set(ds["label"])) == ["angry", "happy", "neutral"]
    excited = ds[ds["utterance"].index("Ses01F_impro01_F001")]
    assert excited["label"] == "happy"  # excited merged into happy
    assert excited["session"] == 1 and excited["speaker"] == "Ses01F" and excited["dialog"] == "Ses01F_impro01"
    assert (excited["valence"], excited["activation"], excited["dominance"]) == (3.5, 3.5, 3.0)
    assert (excited["start"], excited["end"]) == (10.01, 11.3925)
    male = ds[ds["utterance"].index("Ses02F_impro01_M001")]
    assert male["speaker"] == "Ses02M" and male["session"] == 2 and male["label"] == "angry"
    assert sorted(set(ds["session"])) == [1, 2]
    everything = load_iemocap(iemocap, four_classes=False)
    assert len(everything) == 10 and "frustrated" in everything["label"] and "excited" in everything["label"]


def test_iemocap_errors(iemocap):
    wav = iemocap / "Session2" / "sentences" / "wav" / "Ses02F_impro01" / "Ses02F_impro01_F000.wav"
    wav.unlink()
    with pytest.raises(FileNotFoundError, match="(?s)1 wav file.*Ses02F_impro01_F000.wav"):
        load_iemocap(iemocap)
    assert len(load_iemocap(iemocap, on_error="skip")) == 7
    evaluation = iemocap / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    evaluation.write_text(IEMOCAP_EVAL + "[1.0 - 2.0]\tSes01F_impro01_F009\tneu\n")
    with pytest.raises(ValueError, match=r"Ses01F_impro01.txt:16: malformed"):
        load_iemocap(iemocap)
    with pytest.raises(FileNotFoundError, match="no Session1..Session5"):
        load_iemocap(iemocap / "Session1")


# --------------------------------------------------------------------------------------------- MSP-Podcast

MSP_CSV = """FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
MSP-PODCAST_0001_0008.wav,N,4.2,4.0,4.4,127,Female,Train
MSP-PODCAST_0001_0019.wav,H,5.0,5.4,4.6,127,Female,Train
MSP-PODCAST_0002_0033.wav,A,5.6,2.2,5.8,Unknown,Male,Development
MSP-PODCAST_0002_0039.wav,X,3.0,3.0,3.0,Unknown,Male,Development
MSP-PODCAST_0003_0012.wav,S,2.0,2.2,2.8,35,Male,Test1
MSP-PODCAST_0003_0013.wav,U,4.4,4.2,4.0,35,Male,Test1
"""


@pytest.fixture
def msp(tmp_path):
    root = tmp_path / "MSP-Podcast"
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "labels_consensus.csv").write_text(MSP_CSV)
    for line in MSP_CSV.splitlines()[1:]:
        _wav(root / "Audios" / line.split(",")[0])
    return root


def test_msp_podcast_split_and_classes(msp):
    ds = load_msp_podcast(msp)
    assert ds["label"] == ["neutral", "happy", "angry", "sad"]
    assert ds["split"] == ["Train", "Train", "Development", "Test1"]
    assert ds["speaker"][2] == "Unknown" and ds["speaker"][0] == "127"
    assert (ds[1]["activation"], ds[1]["valence"], ds[1]["dominance"]) == (5.0, 5.4, 4.6)
    assert ds[1]["gender"] == "Female"
    assert len(load_msp_podcast(msp, split="Train")) == 2
    assert load_msp_podcast(msp, split="dev")["label"] == ["angry"]
    assert load_msp_podcast(msp, split="Test1", classes=None)["label"] == ["sad", "surprise"]
    assert len(load_msp_podcast(msp, classes=None)) == 6
    with pytest.raises(ValueError, match="no rows with Split_Set"):
        load_msp_podcast(msp, split="Test2")
    with pytest.raises(ValueError, match="unknown MSP-Podcast class"):
        load_msp_podcast(msp, classes=("joy",))


def test_msp_podcast_malformed(msp):
    labels = msp / "Labels" / "labels_consensus.csv"
    labels.write_text(MSP_CSV.replace(",Gender", ",Sex"))
    with pytest.raises(ValueError, match=r"labels_consensus.csv: missing column\(s\) \['Gender'\]"):
        load_msp_podcast(msp)
    labels.write_text(MSP_CSV.replace("MSP-PODCAST_0001_0019.wav,H", "MSP-PODCAST_0001_0019.wav,Q"))
    with pytest.raises(ValueError, match="labels_consensus.csv:3: unknown EmoClass 'Q'"):
        load_msp_podcast(msp)
    labels.write_text(MSP_CSV)
    (msp / "Audios" / "MSP-PODCAST_0001_0008.wav").unlink()
    with pytest.raises(FileNotFoundError, match="MSP-PODCAST_0001_0008.wav"):
        load_msp_podcast(msp)


# --------------------------------------------------------------------------------------------- folder + manifest


def test_audio_folder(tmp_path):
    root = tmp_path / "pool"
    _wav(root / "alice" / "a.wav", 0.3)
    _wav(root / "bob" / "deep" / "b.FLAC", 0.2)
    _wav(root / "bob" / "c.wav", 0.1, sr=8000)
    (root / "bob" / "readme.txt").write_text("not audio")
    ds = load_audio_folder(root, label_from_parent=True)
    assert len(ds) == 3
    assert sorted(ds["label"]) == ["alice", "bob", "deep"]
    assert sorted(round(d, 3) for d in ds["duration"]) == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="no audio files"):
        load_audio_folder(tmp_path / "pool" / "alice", extensions=(".mp3",))


def test_manifest_relative_paths_and_errors(tmp_path):
    corpus = tmp_path / "corpus"
    _wav(corpus / "wav" / "s1" / "u1.wav", 0.25)
    _wav(corpus / "wav" / "0042" / "u2.wav", 0.5)
    manifest = corpus / "train.csv"
    manifest.write_text("path,speaker,duration,style\nwav/s1/u1.wav,s1,0.25,neutral\nwav/0042/u2.wav,0042,,sad\n")
    ds = load_manifest(manifest)
    assert ds["path"][0] == str(corpus / "wav" / "s1" / "u1.wav")
    assert ds["speaker"] == ["s1", "0042"]  # ids stay text
    assert ds["duration"] == [0.25, pytest.approx(0.5)]  # the empty one is read from the header
    assert ds["style"] == ["neutral", "sad"]
    # path[,label] manifests get durations from the headers.
    labelled = corpus / "labelled.csv"
    labelled.write_text("path,label\nwav/s1/u1.wav,x\n")
    assert load_manifest(labelled)["duration"] == [pytest.approx(0.25)]


@pytest.mark.parametrize(
    "text, error, pattern",
    [
        ("file,speaker\na.wav,s\n", ValueError, "m.csv:1: manifest header has no 'path'"),
        ("path,speaker\nwav/s1/u1.wav\n", ValueError, "m.csv:2: expected 2 fields"),
        ("path,duration\nwav/s1/u1.wav,long\n", ValueError, "m.csv:2: duration 'long' is not a number"),
        (
            "path\nmissing1.wav\nwav/s1/u1.wav\nmissing2.wav\n",
            FileNotFoundError,
            "(?s)2 listed.*missing1.wav.*missing2.wav",
        ),
        ("", ValueError, "empty manifest"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, text, error, pattern):
    _wav(tmp_path / "wav" / "s1" / "u1.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(error, match=pattern):
        load_manifest(manifest)


def test_compute_durations_threaded_matches_serial(tmp_path):
    paths = [str(_wav(tmp_path / f"{i}.wav", 0.01 * (i + 1))) for i in range(80)]
    threaded, problems = compute_durations(paths, num_threads=4)
    serial, _ = compute_durations(paths, num_threads=1)
    assert threaded == serial and not problems
    assert threaded[79] == pytest.approx(0.8)
