"""Channel augmentation: random telephone-like responses and the G.711 codec."""

import numpy as np
import pytest

from modeling_dino_speech.data.augment import AugmentConfig, Augmenter
from modeling_dino_speech.data.channel import a_law, apply_responses, g711, mu_law, random_channel_responses

SR = 16000


def _band_power(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_responses_cut_the_band_edges_and_keep_the_speech_band_level():
    rng = np.random.default_rng(0)
    gains = random_channel_responses(64, 8001, SR, rng, highpass_hz=(200, 300), lowpass_hz=(3000, 3400))
    freqs = np.linspace(0, SR / 2, 8001)
    assert gains.shape == (64, 8001) and gains.dtype == np.float32
    assert np.all(gains[:, freqs < 50] < 0.05)  # below every high-pass transition
    assert np.all(gains[:, freqs > 3700] < 1e-6)  # above every low-pass transition
    speech = (freqs >= 300) & (freqs <= 3000)
    np.testing.assert_allclose(np.sqrt(np.mean(gains[:, speech] ** 2, axis=1)), 1.0, rtol=1e-4)
    # Random: no two channels alike.
    assert np.min(np.abs(gains[0] - gains[1:]).max(axis=1)) > 0.05


def test_filtering_is_zero_phase_and_attenuates_above_the_cutoff():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, SR)).astype(np.float32)
    gains = random_channel_responses(2, SR // 2 + 1, SR, rng, lowpass_hz=(3000, 3000))
    y = apply_responses(x, gains)
    assert y.shape == x.shape and y.dtype == np.float32
    for row in range(2):
        assert _band_power(y[row], 3500, 8000) < 1e-8 * _band_power(x[row], 3500, 8000)
        # zero phase: the filtered signal stays aligned with the input
        lag = np.argmax(np.correlate(y[row], x[row], mode="full")) - (SR - 1)
        assert lag == 0


@pytest.mark.parametrize("codec", [mu_law, a_law])
def test_g711_round_trip_is_8_bit_companding(codec):
    x = np.linspace(-1, 1, 20001, dtype=np.float32)
    y = codec(x)
    assert y.dtype == np.float32 and np.all(np.abs(y) <= 1.0 + 1e-6)
    assert len(np.unique(y)) <= 255  # 8 bits, +0 and -0 alike
    # Companding: the error grows with the level, relative error bounded (about 3% at the top segment).
    loud = np.abs(x) > 0.1
    assert np.max(np.abs(y - x)[loud] / np.abs(x[loud])) < 0.04
    quiet = np.abs(x) < 0.01
    assert np.max(np.abs(y - x)[quiet]) < 0.001  # fine steps near zero
    np.testing.assert_array_equal(codec(-x), -codec(x))


def test_g711_keeps_the_level_and_adds_noise_below_the_signal():
    t = np.arange(SR) / SR
    x = (0.05 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32).repeat(2, axis=0)
    y = g711(x, np.array([0, 1]), SR)
    assert y.shape == x.shape
    for row in range(2):
        noise = y[row] - x[row]
        snr = 10 * np.log10(np.mean(x[row] ** 2) / np.mean(noise**2))
        assert 25 < snr < 50, snr  # G.711's quantisation SNR is ~38 dB on a loud tone
        assert _band_power(noise, 4500, 8000) < 1e-3 * _band_power(noise, 0, 4000)  # the codec ran at 8 kHz


def test_augmenter_channels_are_deterministic_and_off_by_default():
    rng_data = np.random.default_rng(3)
    crops = (0.1 * rng_data.standard_normal((6, 8000))).astype(np.float32)
    plain = AugmentConfig(reverb_prob=0.5, noise_prob=0.5, gain_db=(-6, 6))
    with_channel = AugmentConfig(reverb_prob=0.5, noise_prob=0.5, gain_db=(-6, 6), channel_prob=1.0, codec_prob=1.0)
    a = Augmenter(plain, sampling_rate=SR).augment(crops, np.random.default_rng(7))
    b = Augmenter(plain, sampling_rate=SR).augment(crops, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    c = Augmenter(with_channel, sampling_rate=SR).augment(crops, np.random.default_rng(7))
    d = Augmenter(with_channel, sampling_rate=SR).augment(crops, np.random.default_rng(7))
    np.testing.assert_array_equal(c, d)
    assert not np.allclose(a, c)
    # every crop went through a low-pass at <= 3.9 kHz
    for row in c:
        assert _band_power(row, 4500, 8000) < 1e-5 * _band_power(row, 300, 3000)


def test_channel_settings_are_checked():
    with pytest.raises(ValueError, match="channel_prob"):
        AugmentConfig(channel_prob=1.5)
    with pytest.raises(ValueError, match="lowpass_hz"):
        AugmentConfig(lowpass_hz=(3900, 3000))
