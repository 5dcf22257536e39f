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


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_spreadsheet_encodings_are_read(tmp_path, encoding):
    path = tmp_path / "exported.txt"
    path.write_bytes(VOX1_O.replace("\n", "\r\n").encode(encoding))
    assert read_trials(path) == read_trials_text(tmp_path, VOX1_O)


def read_trials_text(tmp_path, text):
    plain = tmp_path / "plain.txt"
    plain.write_text(text, encoding="utf-8")
    return read_trials(plain)


def test_other_encodings_fail_with_the_offset_of_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("1 caf\u00e9.wav b.wav\n".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"latin1.txt: not utf-8 text \(byte 0xe9 at offset 5\); save the list as UTF-8"
    ):
        read_trials(path)


def test_repeated_and_mirrored_trials_are_reported_and_dropped(tmp_path):
    from modeling_dino_speech.data.trials import TrialListWarning

    path = tmp_path / "t.txt"
    path.write_text("1 a.wav b.wav\n0 a.wav c.wav\n1 a.wav b.wav\n1 b.wav a.wav\n")
    with pytest.warns(TrialListWarning, match=r"t.txt: 2 repeated trial\(s\) .* on lines 3, 4: dropped"):
        assert read_trials(path) == [Trial(1, "a.wav", "b.wav"), Trial(0, "a.wav", "c.wav")]
    with pytest.warns(TrialListWarning, match="kept"):
        assert len(read_trials(path, duplicates="keep")) == 4
    with pytest.raises(ValueError, match="2 repeated trial"):
        read_trials(path, duplicates="error")


def test_self_trials_are_reported_and_dropped_and_conflicting_labels_refused(tmp_path):
    from modeling_dino_speech.data.trials import TrialListWarning

    path = tmp_path / "t.txt"
    path.write_text("1 a.wav a.wav\n0 a.wav c.wav\n")
    with pytest.warns(TrialListWarning, match=r"1 self-trial\(s\) \(a file against itself\) on line 1: dropped"):
        assert read_trials(path) == [Trial(0, "a.wav", "c.wav")]
    with pytest.raises(ValueError, match="self-trial"):
        read_trials(path, self_trials="error")
    path.write_text("1 a.wav b.wav\n0 b.wav a.wav\n")
    with pytest.raises(ValueError, match=r"t.txt:2: the pair b.wav a.wav has label 0 here and 1 on line 1"):
        read_trials(path)


def test_unlabelled_pairs_for_scoring(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("a.wav b.wav\nc.wav d.wav\n")
    assert read_trials(path, allow_unlabelled=True) == [Trial(None, "a.wav", "b.wav"), Trial(None, "c.wav", "d.wav")]
    with pytest.raises(ValueError, match="expected 3 fields"):
        read_trials(path)
    path.write_text("1 a.wav b.wav\nc.wav d.wav\n")
    with pytest.raises(ValueError, match="pairs.txt:2: an unlabelled pair in a labelled list"):
        read_trials(path, allow_unlabelled=True)


def test_lists_without_both_classes_are_refused(tmp_path):
    from modeling_dino_speech.data.trials import check_both_classes

    path = tmp_path / "t.txt"
    path.write_text("1 a.wav b.wav\n1 a.wav c.wav\n")
    with pytest.raises(ValueError, match="t.txt: all 2 trials are target"):
        check_both_classes(read_trials(path), str(path))
    path.write_text("0 a.wav b.wav\n")
    with pytest.raises(ValueError, match="all 1 trials are non-target"):
        check_both_classes(read_trials(path), str(path))
    check_both_classes(read_trials_text(tmp_path, VOX1_O), "ok")
