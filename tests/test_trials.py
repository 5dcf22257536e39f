import pytest

from modeling_dino_speech.data.trials import Trial, read_trials, trial_files, write_trials

VOX1_O = """1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav
0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav
1 id10270/x6uYqmx31kE/00001.wav id10270/GWXujl-xAVM/00017.wav
"""


def test_official_format(tmp_path):
    path = tmp_path / "veri_test2.txt"
    path.write_text(VOX1_O)
    trials = read_trials(path)
    assert trials[0] == Trial(1, "id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav")
    assert [t.label for t in trials] == [1, 0, 1]
    assert len(trial_files(trials)) == 4


def test_kaldi_target_nontarget_format_and_comments(tmp_path):
    path = tmp_path / "vox1_O_cleaned.kaldi"
    path.write_text(
        "# cleaned list\n\n"
        "id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav target\n"
        "id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav nontarget\n"
    )
    assert [t.label for t in read_trials(path)] == [1, 0]


def test_audio_root_joins(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(VOX1_O)
    trials = read_trials(path, audio_root="/data/vox1/wav")
    assert trials[0].enroll == "/data/vox1/wav/id10270/x6uYqmx31kE/00001.wav"


@pytest.mark.parametrize(
    "line, problem",
    [
        ("1 a.wav", "expected 3 fields"),
        ("1 a.wav b.wav extra", "expected 3 fields"),
        ("2 a.wav b.wav", "no trial label"),
        ("a.wav b.wav maybe", "no trial label"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text("1 a.wav b.wav\n\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"bad.txt:3: {problem}"):
        read_trials(path)


def test_missing_list_and_empty_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_trials(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no trials"):
        read_trials(empty)


def test_check_files_reports_all_missing_at_once(tmp_path):
    wav = tmp_path / "wav"
    (wav / "id10270" / "x6uYqmx31kE").mkdir(parents=True)
    (wav / "id10270" / "x6uYqmx31kE" / "00001.wav").write_bytes(b"")
    path = tmp_path / "t.txt"
    path.write_text(VOX1_O)
    with pytest.raises(FileNotFoundError) as err:
        read_trials(path, audio_root=wav, check_files=True)
    message = str(err.value)
    assert "3 audio file(s)" in message
    for name in ("8jEAjG6SegY/00008.wav", "ize_eiCFEg0/00003.wav", "GWXujl-xAVM/00017.wav"):
        assert name in message
    assert "x6uYqmx31kE/00001.wav" not in message


def test_check_files_relative_to_list_folder(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    path = tmp_path / "trials.txt"
    path.write_text("1 a.wav b.wav\n")
    assert read_trials(path, check_files=True) == [Trial(1, "a.wav", "b.wav")]


def test_write_read_roundtrip(tmp_path):
    trials = [Trial(1, "s1/a.wav", "s1/b.wav"), Trial(0, "s1/a.wav", "s2/c.wav")]
    path = tmp_path / "out.txt"
    write_trials(path, trials)
    assert read_trials(path) == trials
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        write_trials(path, [Trial(2, "a", "b")])
