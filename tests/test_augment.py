import numpy as np
import pytest
import soundfile as sf
from helpers import speech_like

from modeling_dino_speech.data.augment import (
    AugmentConfig,
    Augmenter,
    coloured_noise,
    mix_at_snr,
    reverberate,
    snr_db,
    synthetic_music,
    synthetic_rir,
)
from modeling_dino_speech.training.config import from_dict

SR = 16000


def _tone(freq, seconds=2.0, sr=SR, channels=1):
    x = 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)
    return np.stack([x] * channels, axis=1).astype(np.float32) if channels > 1 else x.astype(np.float32)


def _peak_hz(x):
    return np.argmax(np.abs(np.fft.rfft(x))) * SR / len(x)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="reverb_prob"):
        AugmentConfig(reverb_prob=1.5)
    with pytest.raises(ValueError, match="music_snr"):
        AugmentConfig(music_snr=(18, 3))
    with pytest.raises(ValueError, match="category_weights"):
        AugmentConfig(category_weights=(0, 0, 0))
    with pytest.raises(ValueError, match="unknown key.*'snr'"):
        from_dict(AugmentConfig, {"snr": 3})
    assert from_dict(AugmentConfig, {"noise_prob": 0.5}).noise_prob == 0.5


def test_mix_at_snr_is_exact():
    rng = np.random.default_rng(0)
    x = speech_like(rng, 4)
    noise = rng.standard_normal(x.shape).astype(np.float32) * 3.0
    target = np.array([0.0, 3.0, 10.0, 18.0])
    y = mix_at_snr(x, noise, target)
    assert np.allclose(snr_db(x, y - x), target, atol=1e-3)
    # Silent signal: unchanged, no NaN.
    silent = np.zeros((1, SR), np.float32)
    assert np.array_equal(mix_at_snr(silent, noise[:1], np.array([5.0])), silent)


@pytest.mark.parametrize("category, weights", [("noise", (1, 0, 0)), ("music", (0, 1, 0)), ("babble", (0, 0, 1))])
def test_augmenter_snr_matches_request_per_category(tmp_path, category, weights):
    rng = np.random.default_rng(1)
    pool = []
    for i in range(8):  # a training pool for babble
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, speech_like(rng, 1, 2 * SR)[0], SR)
        pool.append(str(path))
    cfg = AugmentConfig(
        reverb_prob=0.0, noise_prob=1.0, category_weights=weights, noise_snr=(6, 6), music_snr=(6, 6), babble_snr=(6, 6)
    )
    aug = Augmenter(cfg, babble_pool=pool, sampling_rate=SR)
    x = speech_like(rng, 3)
    y = aug.augment(x, np.random.default_rng(7))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.allclose(snr_db(x, y - x), 6.0, atol=1e-2)


def test_reproducible_from_generator():
    cfg = AugmentConfig(reverb_prob=0.5, noise_prob=0.7)
    aug = Augmenter(cfg, sampling_rate=SR)
    x = speech_like(np.random.default_rng(0), 6)
    a = aug.augment(x, np.random.default_rng(123))
    b = Augmenter(cfg, sampling_rate=SR).augment(x, np.random.default_rng(123))
    c = aug.augment(x, np.random.default_rng(124))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.isfinite(a).all()
    # 1-D input keeps its shape.
    assert aug.augment(x[0], np.random.default_rng(0)).shape == (SR,)


def test_probabilities_are_respected():
    cfg = AugmentConfig(reverb_prob=0.0, noise_prob=0.3)
    aug = Augmenter(cfg, sampling_rate=SR)
    x = speech_like(np.random.default_rng(0), 400, 800)
    y = aug.augment(x, np.random.default_rng(3))
    changed = np.any(y != x, axis=1).mean()
    assert 0.22 < changed < 0.38


@pytest.mark.parametrize("slope", [0.0, 1.0, 2.0])
def test_coloured_noise_slope(slope):
    noise = coloured_noise(16, 8192, slope, np.random.default_rng(0))
    assert noise.shape == (16, 8192) and np.allclose(np.sqrt((noise.astype(np.float64) ** 2).mean(1)), 1.0, atol=1e-4)
    power = (np.abs(np.fft.rfft(noise, axis=1)) ** 2).mean(0)
    freqs = np.arange(len(power))
    band = (freqs > 10) & (freqs < 3000)
    fitted = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
    assert fitted == pytest.approx(-slope, abs=0.15)


def test_synthetic_rir_decays_at_rt60():
    rir = synthetic_rir(SR, np.random.default_rng(0), rt60=(0.6, 0.6), drr_db=(0, 0), max_seconds=2.0)
    assert np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, abs=1e-5)
    assert np.argmax(np.abs(rir)) == 0
    # Schroeder backward integration: the -5 to -25 dB slope extrapolated to -60 dB gives the RT60.
    edc = np.cumsum((rir[1:].astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(edc_db)) / SR
    sel = (edc_db < -5) & (edc_db > -25)
    slope = np.polyfit(t[sel], edc_db[sel], 1)[0]
    assert -60 / slope == pytest.approx(0.6, rel=0.15)


def test_reverberate_aligns_and_keeps_level():
    x = speech_like(np.random.default_rng(0), 2)
    delayed_impulse = np.zeros(100, np.float32)
    delayed_impulse[37] = 1.0
    y = reverberate(x, [delayed_impulse, synthetic_rir(SR, np.random.default_rng(1))])
    assert np.allclose(y[0], x[0], atol=1e-5)
    assert np.sqrt((y[1] ** 2).mean()) == pytest.approx(np.sqrt((x[1] ** 2).mean()), rel=1e-3)
    assert not np.allclose(y[1], x[1], atol=1e-2)


def test_synthetic_music_is_tonal():
    m = synthetic_music(SR, SR, np.random.default_rng(0))
    assert m.shape == (SR,) and np.isfinite(m).all()
    spectrum = np.abs(np.fft.rfft(m)) ** 2
    # Energy concentrates in a few harmonic peaks, unlike noise.
    assert np.sort(spectrum)[-200:].sum() / spectrum.sum() > 0.5


@pytest.fixture
def musan_and_rirs(tmp_path):
    musan = tmp_path / "musan"
    for category, sub, freq in (
        ("noise", "free-sound", 1000.0),
        ("music", "fma", 2000.0),
        ("speech", "librivox", 3000.0),
    ):
        folder = musan / category / sub
        folder.mkdir(parents=True)
        for i in range(2):
            sf.write(folder / f"{category}-{sub}-{i:04d}.wav", _tone(freq, 3.0), SR)
    rirs = tmp_path / "RIRS_NOISES"
    room = rirs / "simulated_rirs" / "smallroom" / "Room001"
    room.mkdir(parents=True)
    impulse = np.zeros(800, np.float32)
    impulse[10] = 1.0
    sf.write(room / "Room001-00001.wav", impulse, SR)
    real = rirs / "real_rirs_isotropic_noises"
    real.mkdir(parents=True)
    sf.write(real / "RVB2014_type1_rir_largeroom1_near_angla.wav", np.stack([impulse] * 8, 1), SR)
    sf.write(real / "RVB2014_type1_noise_largeroom1_1.wav", _tone(500.0, 1.0), SR)
    return musan, rirs


def test_reads_musan_and_rirs_layouts(musan_and_rirs):
    musan, rirs = musan_and_rirs
    aug = Augmenter(AugmentConfig(musan_root=str(musan), rir_root=str(rirs)), sampling_rate=SR)
    assert len(aug.noise_files) == len(aug.music_files) == len(aug.speech_files) == 2
    assert aug.babble_files == aug.speech_files
    assert len(aug.rir_files) == 2 and not any("noise" in f.rsplit("/", 1)[-1] for f in aug.rir_files)
    x = np.zeros((1, SR), np.float32)
    x[0, ::160] = 1.0  # a 100 Hz pulse train: broadband, so the added tone is easy to spot
    for weights, freq in (((1, 0, 0), 1000.0), ((0, 1, 0), 2000.0), ((0, 0, 1), 3000.0)):
        aug.config = AugmentConfig(
            musan_root=str(musan),
            rir_root=str(rirs),
            reverb_prob=1.0,
            noise_prob=1.0,
            category_weights=weights,
            noise_snr=(-10, -10),
            music_snr=(-10, -10),
            babble_snr=(-10, -10),
            babble_speakers=(3, 3),
        )
        y = aug.augment(x, np.random.default_rng(0))
        assert _peak_hz(y[0] - x[0]) == pytest.approx(freq, abs=2)


def test_missing_category_falls_back_and_bad_files_are_skipped(tmp_path, caplog):
    musan = tmp_path / "musan"
    (musan / "noise" / "free-sound").mkdir(parents=True)
    (musan / "noise" / "free-sound" / "broken.wav").write_bytes(b"RIFF not really")
    cfg = AugmentConfig(
        musan_root=str(musan), reverb_prob=1.0, noise_prob=1.0, noise_snr=(5, 5), category_weights=(1, 0, 0)
    )
    aug = Augmenter(cfg, sampling_rate=SR)
    described = aug.describe()
    assert described["music"] == "synthetic music" and described["reverb"] == "synthetic room impulse responses"
    assert described["babble"].startswith("unavailable")
    assert aug.noise_files and not aug.speech_files
    x = speech_like(np.random.default_rng(0), 4)
    with caplog.at_level("WARNING"):
        y = aug.augment(x, np.random.default_rng(5))
    # Every crop fell back to generated noise at the requested SNR (measured on the reverberant signal).
    assert np.isfinite(y).all() and not np.allclose(y, x)
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "broken.wav" in warnings[0]


def test_missing_roots_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="musan_root"):
        Augmenter(AugmentConfig(musan_root=str(tmp_path / "nope")), sampling_rate=SR)
    with pytest.raises(FileNotFoundError, match="rir_root"):
        Augmenter(AugmentConfig(rir_root=str(tmp_path / "nope")), sampling_rate=SR)


def test_random_gain_per_crop_changes_only_the_level():
    from modeling_dino_speech.data.augment import AugmentConfig, Augmenter

    crops = np.random.default_rng(0).standard_normal((6, 8000)).astype(np.float32) * 0.1
    clean = Augmenter(AugmentConfig(reverb_prob=0.0, noise_prob=0.0), sampling_rate=SR)(crops, np.random.default_rng(1))
    np.testing.assert_array_equal(clean, crops)
    gained = Augmenter(AugmentConfig(reverb_prob=0.0, noise_prob=0.0, gain_db=(-6.0, 6.0)), sampling_rate=SR)(
        crops, np.random.default_rng(1)
    )
    ratios_db = 20 * np.log10(np.abs(gained).max(axis=1) / np.abs(crops).max(axis=1))
    assert np.all(np.abs(ratios_db) <= 6.0 + 1e-4) and np.ptp(ratios_db) > 1.0
    np.testing.assert_allclose(gained / gained[:, :1], crops / crops[:, :1], rtol=1e-4)
