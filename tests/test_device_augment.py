"""Augmentation on the training device (`data.augment_on: device`): the same augmentations as the CPU path.

* for given parameters every tensor function equals its numpy counterpart to float rounding;
* with file sources (MUSAN layout, RIRS_NOISES layout, babble from the training pool) the planner draws the
  CPU path's own decisions, so for a fixed seed the device path's output *is* the CPU path's (float rounding);
* with generated sources (coloured noise, synthetic music and impulse responses: the demo's situation) the
  decisions, and what they do to the audio, follow the same distributions (many draws, two-sample tests);
* the raw-crop loader plus the device augmenter gives the CPU loader's features.
"""

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import speech_like
from scipy import stats

from modeling_dino_speech import DinoSpeechFeatureExtractor
from modeling_dino_speech.data import augment as augment_module
from modeling_dino_speech.data.augment import (
    AugmentConfig,
    Augmenter,
    mix_at_snr,
    music_from_notes,
    reverberate,
    rir_from_draws,
    shape_noise,
    snr_db,
    synthetic_rir,
)
from modeling_dino_speech.data.channel import apply_responses, channel_responses, draw_channel_parameters, g711
from modeling_dino_speech.data.device_augment import (
    BANK,
    COLOURED,
    AugmentPlanner,
    DeviceAugmenter,
    apply_responses_torch,
    channel_responses_torch,
    collate_plans,
    g711_torch,
    mix_at_snr_torch,
    music_from_notes_torch,
    resample_torch,
    reverberate_torch,
    rir_from_draws_torch,
    shape_noise_torch,
    to_int16,
)
from modeling_dino_speech.data.multicrop import MultiCropConfig, build_multicrop_dataloader
from modeling_dino_speech.resampling import resample

SR = 16000


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def _close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.abs(a - b).max() <= rtol * np.abs(a).max(), np.abs(a - b).max() / np.abs(a).max()


# --------------------------------------------------------------------------------------------- the tensor ops


def test_int16_crops_are_exact_for_16_bit_audio():
    values = np.arange(-32768, 32768, 7, dtype=np.int16)
    as_float = values.astype(np.float32) / 32768.0
    np.testing.assert_array_equal(to_int16(as_float), values)
    assert to_int16(np.array([1.5, -2.0], np.float32)).tolist() == [32767, -32768]  # clipped


def test_reverb_and_mixing_equal_numpy():
    rng = np.random.default_rng(0)
    x = speech_like(rng, 4, 4000)
    rirs = [synthetic_rir(SR, rng, max_seconds=0.2) for _ in range(3)] + [np.eye(1, 50, 17, dtype=np.float32)[0]]
    padded = np.zeros((4, max(len(r) for r in rirs)), np.float32)
    for i, r in enumerate(rirs):
        padded[i, : len(r)] = r
    _close(reverberate_torch(_t(x), _t(padded)).numpy(), reverberate(x, rirs))
    noise = rng.standard_normal(x.shape).astype(np.float32)
    snrs = np.array([0.0, 5.0, 12.5, 18.0])
    _close(mix_at_snr_torch(_t(x), _t(noise), _t(snrs)).numpy(), mix_at_snr(x, noise, snrs), 1e-6)
    silent = np.zeros((1, 4000), np.float32)
    assert np.array_equal(mix_at_snr_torch(_t(silent), _t(noise[:1]), _t(snrs[:1])).numpy(), silent)


def test_generated_sources_equal_numpy_for_the_same_draws():
    rng = np.random.default_rng(1)
    white = rng.standard_normal((3, 5000)).astype(np.float32)
    slopes = np.array([0.0, 1.0, 2.0])
    _close(shape_noise_torch(_t(white), _t(slopes)).numpy(), shape_noise(white, slopes))
    # synthetic music: notes of 2000 samples, 1-3 voices
    midi = rng.integers(40, 84, size=(3, 4, 3))
    voices = np.array([1, 2, 3])
    expected = [music_from_notes(7000, SR, 2000, midi[k, :, : voices[k]], 0.3) for k in range(3)]
    got = music_from_notes_torch(7000, SR, _t(np.full(3, 2000)), _t(midi), _t(voices), _t(np.full(3, 0.3)))
    for k in range(3):
        _close(got[k].numpy(), expected[k], 1e-4)
    # impulse responses of different lengths in one padded batch
    t60 = np.array([0.2, 0.5])
    lengths = np.array([3200, 8000])
    tails = rng.standard_normal((2, 8000))
    first, drr = np.array([40, 100]), np.array([3.0, 20.0])
    got = rir_from_draws_torch(SR, _t(t60), _t(tails), _t(lengths), _t(first), _t(drr)).numpy()
    for k in range(2):
        _close(got[k, : lengths[k]], rir_from_draws(SR, t60[k], tails[k, : lengths[k]], first[k], drr[k]))
        assert not got[k, lengths[k] :].any()


def test_channel_responses_and_filtering_equal_numpy():
    rng = np.random.default_rng(2)
    params = draw_channel_parameters(6, SR, rng, eq_bands=(0, 3))
    assert set(params["bands"].tolist()) - {0, 1, 2, 3} == set()
    gains = channel_responses(params, 4001, SR)
    got = channel_responses_torch({k: _t(v) for k, v in params.items()}, 4001, SR).numpy()
    _close(got, gains, 1e-5)
    x = rng.standard_normal((6, 8000)).astype(np.float32)
    _close(apply_responses_torch(_t(x), _t(gains)).numpy(), apply_responses(x, gains), 1e-5)


def test_g711_equals_numpy_at_8khz():
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal((4, 4000))).astype(np.float32)
    laws = np.array([0, 1, 0, 1])
    expected = g711(x, laws, 8000)
    got = g711_torch(_t(x), _t(laws), 8000).numpy()
    # the companding is a step function: float rounding may move a rare sample across a step
    step = np.abs(np.diff(np.unique(np.abs(expected)))).max()
    assert np.mean(np.abs(got - expected) <= 1e-6) > 0.999 and np.abs(got - expected).max() <= step


def test_resampler_and_g711_away_from_8khz_agree_with_soxr():
    t = np.arange(16000) / SR
    tones = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (300.0, 1000.0, 3000.0)]).astype(np.float32)
    for rate in (8000, 48000):
        ours = resample_torch(_t(tones), SR, rate).numpy()
        theirs = resample(tones, SR, rate)
        n = min(ours.shape[-1], theirs.shape[-1])
        inner = slice(n // 10, n - n // 10)  # away from the edges, where the two pad differently
        err = ours[:, inner] - theirs[:, inner]
        assert 10 * np.log10(np.mean(theirs[:, inner] ** 2) / np.mean(err**2)) > 60  # pass band: > 60 dB apart
    # a tone above the 8 kHz Nyquist frequency is removed by the round trip, as soxr removes it
    high = (0.3 * np.sin(2 * np.pi * 5000.0 * t)).astype(np.float32)[None]
    back = resample_torch(resample_torch(_t(high), SR, 8000), 8000, SR).numpy()
    assert np.sqrt(np.mean(back[:, 1600:-1600] ** 2)) < 1e-3
    # G.711 at 16 kHz: the same level of quantisation noise, in the telephone band
    x = (0.05 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32).repeat(2, axis=0)
    ours = g711_torch(_t(x), _t(np.array([0, 1])), SR).numpy()
    theirs = g711(x, np.array([0, 1]), SR)
    for row in range(2):
        snr_ours = snr_db(x[row, 1600:-1600], ours[row, 1600:-1600] - x[row, 1600:-1600])
        snr_theirs = snr_db(x[row, 1600:-1600], theirs[row, 1600:-1600] - x[row, 1600:-1600])
        assert abs(snr_ours - snr_theirs) < 2.0 and 25 < snr_ours < 50


# --------------------------------------------------------------------------------------------- file sources


@pytest.fixture
def sources(tmp_path):
    """MUSAN (noise, music, speech; one file shorter than a crop) and RIRS_NOISES layouts, 16-bit PCM."""
    rng = np.random.default_rng(5)
    musan = tmp_path / "musan"
    for category in ("noise", "music", "speech"):
        folder = musan / category / "src"
        folder.mkdir(parents=True)
        for i in range(3):
            n = int(SR * (0.3 if i == 0 else 2.5))
            audio = np.clip(0.2 * rng.standard_normal(n), -1, 1).astype(np.float32)
            sf.write(folder / f"{category}-{i}.wav", audio, SR, subtype="PCM_16")
    room = tmp_path / "RIRS_NOISES" / "simulated_rirs" / "smallroom" / "Room001"
    room.mkdir(parents=True)
    for i in range(3):
        h = rng.standard_normal(3000) * np.exp(-np.arange(3000) / 500.0)
        h[0] = 3.0
        sf.write(room / f"Room001-{i:05d}.wav", (h / (1.1 * np.abs(h).max())).astype(np.float32), SR, subtype="PCM_16")
    return str(musan), str(tmp_path / "RIRS_NOISES")


def _cpu_and_device(cfg, x, seed, sampling_rate=SR, pool=None):
    fe = DinoSpeechFeatureExtractor(sampling_rate=sampling_rate, high_freq=0.0)
    cpu = Augmenter(cfg, babble_pool=pool, sampling_rate=sampling_rate).augment(x, np.random.default_rng(seed))
    device = DeviceAugmenter(cfg, fe, "cpu")
    plan = device.planner(pool).plan(*x.shape, np.random.default_rng(seed))
    return cpu, device.augment(_t(x), collate_plans([plan], len(x))).numpy(), plan


def test_device_path_is_the_cpu_path_for_a_fixed_seed_with_file_sources(sources):
    musan, rirs = sources
    cfg = AugmentConfig(
        musan_root=musan, rir_root=rirs, reverb_prob=0.6, noise_prob=0.9, channel_prob=0.5, gain_db=(-6, 6)
    )
    x = speech_like(np.random.default_rng(0), 6, 8000)
    seen = {"reverb": 0, "noise": 0, "music": 0, "babble": 0, "channel": 0}
    for seed in range(12):
        cpu, device, plan = _cpu_and_device(cfg, x, seed)
        _close(device, cpu, 2e-6)
        assert (plan["source"][plan["noisy"]] == BANK).all()
        seen["reverb"] += int(plan["reverb"].sum())
        seen["channel"] += int(plan["channel"].sum())
        for name, k in (("noise", 0), ("music", 1), ("babble", 2)):
            seen[name] += int((plan["noisy"] & (plan["category"] == k)).sum())
    assert min(seen.values()) > 3, seen  # every kind was exercised


def test_babble_from_the_training_pool_and_the_codec_at_8khz_are_the_cpu_paths(tmp_path):
    rng = np.random.default_rng(6)
    pool = []
    for i in range(6):
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, speech_like(rng, 1, 12000)[0], 8000, subtype="PCM_16")
        pool.append(str(path))
    cfg = AugmentConfig(reverb_prob=0.0, noise_prob=1.0, category_weights=(0, 0, 1), codec_prob=0.7)
    x = speech_like(rng, 5, 4000)
    for seed in range(4):
        cpu, device, plan = _cpu_and_device(cfg, x, seed, sampling_rate=8000, pool=pool)
        assert len(plan["babble_row"]) == 5 and plan["codec"].any()
        diff = np.abs(device - cpu)
        # a rare sample one G.711 step away, see the codec test
        assert np.mean(diff <= 1e-6) > 0.999 and diff.max() < 0.05 * np.abs(cpu).max()


def test_unusable_files_fall_back_as_on_the_cpu_path(sources):
    musan, _ = sources
    broken = os.path.join(musan, "noise", "src", "broken.wav")
    with open(broken, "wb") as handle:
        handle.write(b"RIFF not really")
    cfg = AugmentConfig(musan_root=musan, reverb_prob=0.0, noise_prob=1.0, category_weights=(1, 0, 0))
    device = DeviceAugmenter(cfg, DinoSpeechFeatureExtractor(), "cpu")
    assert device.bad_files == {broken}
    planner = device.planner()
    plans = [planner.plan(8, 4000, np.random.default_rng(s)) for s in range(10)]
    sources_used = np.concatenate([p["source"] for p in plans])
    picked_broken = np.concatenate([p["seg_file"][:, 0] for p in plans]) == -1
    assert (sources_used[picked_broken] == COLOURED).all() and picked_broken.any() and (sources_used == BANK).any()
    y = device.augment(_t(speech_like(np.random.default_rng(0), 8, 4000)), collate_plans([plans[0]], 8))
    assert torch.isfinite(y).all()


# --------------------------------------------------------------------------------------------- distributions


def _record_cpu_decisions(monkeypatch, cfg, crops, rounds, length):
    """Run the CPU Augmenter and record, from the functions it calls, what it decided."""
    seen = {k: [] for k in ("reverb_rows", "snr", "category", "t60", "slope", "note_len", "channel", "law", "drr")}
    real = {
        name: getattr(augment_module, name)
        for name in ("reverberate", "mix_at_snr", "rir_from_draws", "shape_noise", "music_from_notes", "g711")
    }
    real_noise = Augmenter._noise
    real_draw = augment_module.draw_channel_parameters

    def noise(self, category, length, rng):
        seen["category"].append(augment_module.CATEGORIES.index(category))
        return real_noise(self, category, length, rng)

    def rir(sampling_rate, t60, white, first, drr):
        seen["t60"].append(t60)
        seen["drr"].append(drr)
        return real["rir_from_draws"](sampling_rate, t60, white, first, drr)

    def draw(num, *args, **kwargs):
        params = real_draw(num, *args, **kwargs)
        seen["channel"].extend(params["bands"].tolist())
        return params

    monkeypatch.setattr(augment_module, "reverberate", lambda w, r: seen["reverb_rows"].append(len(w)) or w)
    monkeypatch.setattr(
        augment_module, "mix_at_snr", lambda w, n, s: seen["snr"].extend(s) or real["mix_at_snr"](w, n, s)
    )
    monkeypatch.setattr(augment_module, "rir_from_draws", rir)
    monkeypatch.setattr(
        augment_module, "shape_noise", lambda w, s: seen["slope"].append(float(s)) or real["shape_noise"](w, s)
    )
    monkeypatch.setattr(
        augment_module,
        "music_from_notes",
        lambda n, sr, note_len, m, d: (
            seen["note_len"].append(note_len) or real["music_from_notes"](n, sr, note_len, m, d)
        ),
    )
    monkeypatch.setattr(augment_module, "g711", lambda w, laws, sr: seen["law"].extend(laws.tolist()) or w)
    monkeypatch.setattr(augment_module, "draw_channel_parameters", draw)
    monkeypatch.setattr(Augmenter, "_noise", noise)
    aug = Augmenter(cfg, sampling_rate=SR)
    x = speech_like(np.random.default_rng(0), crops, length)
    for r in range(rounds):
        aug.augment(x, np.random.default_rng([11, r]))
    monkeypatch.undo()
    return seen


def test_decisions_follow_the_cpu_paths_distributions_with_generated_sources(monkeypatch):
    cfg = AugmentConfig(
        reverb_prob=0.45, noise_prob=0.7, channel_prob=0.4, codec_prob=0.3, category_weights=(1.0, 1.0, 2.0)
    )
    crops, rounds, length = 6, 300, 800
    cpu = _record_cpu_decisions(monkeypatch, cfg, crops, rounds, length)
    planner = AugmentPlanner(cfg, sampling_rate=SR)
    plans = [planner.plan(crops, length, np.random.default_rng([12, r])) for r in range(rounds)]
    dev = {k: np.concatenate([p[k] for p in plans]) for k in plans[0] if k not in ("babble_row", "babble_wave")}
    total = crops * rounds

    def same_rate(count_cpu, count_dev, n=total):
        table = np.array([[count_cpu, n - count_cpu], [count_dev, n - count_dev]])
        assert stats.chi2_contingency(table)[1] > 1e-3, table

    same_rate(sum(cpu["reverb_rows"]), int(dev["reverb"].sum()))
    same_rate(len(cpu["snr"]), int(dev["noisy"].sum()))
    same_rate(len(cpu["channel"]), int(dev["channel"].sum()))
    same_rate(len(cpu["law"]), int(dev["codec"].sum()))
    noisy = dev["noisy"]
    counts = np.array([np.bincount(cpu["category"], minlength=3), np.bincount(dev["category"][noisy], minlength=3)])
    assert stats.chi2_contingency(counts)[1] > 1e-3, counts
    # without babble files babble falls back to coloured noise, on both paths
    assert (dev["source"][noisy & (dev["category"] == 2)] == COLOURED).all()

    def same_distribution(a, b):
        assert stats.ks_2samp(np.asarray(a, float), np.asarray(b, float)).pvalue > 1e-3

    same_distribution(cpu["snr"], dev["snr"][noisy])
    same_distribution(cpu["t60"], dev["rir_t60"][dev["reverb"]])
    same_distribution(cpu["drr"], dev["rir_drr"][dev["reverb"]])
    same_distribution(cpu["slope"], dev["slope"][dev["source"] == COLOURED])
    same_distribution(cpu["note_len"], dev["note_len"][noisy & (dev["category"] == 1)])
    for a, b, values in (
        (cpu["channel"], dev["ch_bands"][dev["channel"]], 4),  # peaking bands per channel
        (cpu["law"], dev["law"][dev["codec"]], 2),  # mu-law / A-law
    ):
        counts = np.array([np.bincount(a, minlength=values), np.bincount(b, minlength=values)])
        assert stats.chi2_contingency(counts)[1] > 1e-3, counts


def test_what_the_augmentation_does_to_the_audio_follows_the_cpu_path():
    """The outputs themselves, with generated sources: measured SNR, level change and how many crops change."""
    cfg = AugmentConfig(reverb_prob=0.5, noise_prob=0.6, noise_snr=(0, 18), gain_db=(-6, 6))
    crops, rounds, length = 8, 60, 1600
    x = speech_like(np.random.default_rng(0), crops, length)
    aug = Augmenter(cfg, sampling_rate=SR)
    device = DeviceAugmenter(cfg, DinoSpeechFeatureExtractor(), "cpu")
    planner = device.planner()
    cpu = np.concatenate([aug.augment(x, np.random.default_rng([21, r])) for r in range(rounds)])
    dev = np.concatenate(
        [
            device.augment(
                _t(x), collate_plans([planner.plan(crops, length, np.random.default_rng([22, r]))], crops)
            ).numpy()
            for r in range(rounds)
        ]
    )
    dry = np.tile(x, (rounds, 1))
    for statistic in (
        lambda y: 20 * np.log10(np.sqrt(np.mean(y**2, axis=1)) / np.sqrt(np.mean(dry**2, axis=1))),  # level
        lambda y: np.abs(np.fft.rfft(y, axis=1))[:, 400:].sum(1) / np.abs(np.fft.rfft(y, axis=1)).sum(1),  # highs
    ):
        assert stats.ks_2samp(statistic(cpu), statistic(dev)).pvalue > 1e-3


def test_device_noise_and_rirs_have_the_requested_colour_and_decay():
    cfg = AugmentConfig(reverb_prob=1.0, noise_prob=1.0, category_weights=(1, 0, 0), noise_slope=(1.0, 1.0))
    device = DeviceAugmenter(cfg, DinoSpeechFeatureExtractor(), "cpu")
    plan = collate_plans([device.planner().plan(16, 8192, np.random.default_rng(0))], 16)
    noise = device._noises(plan, torch.arange(16), 8192, torch.device("cpu")).numpy()
    power = (np.abs(np.fft.rfft(noise, axis=1)) ** 2).mean(0)
    freqs = np.arange(len(power))
    band = (freqs > 10) & (freqs < 3000)
    assert np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0] == pytest.approx(-1.0, abs=0.15)
    plan["rir_t60"][:] = 0.6
    plan["rir_drr"][:] = 1.0
    rirs = device._rirs(plan, torch.arange(16), torch.device("cpu")).numpy()
    edc = np.cumsum((rirs[:, 1:].astype(np.float64) ** 2)[:, ::-1], axis=1)[:, ::-1].mean(0)
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(edc_db)) / SR
    sel = (edc_db < -5) & (edc_db > -25)
    assert -60 / np.polyfit(t[sel], edc_db[sel], 1)[0] == pytest.approx(0.6, rel=0.15)


def test_device_augmentation_is_a_function_of_the_plan():
    cfg = AugmentConfig(reverb_prob=0.7, noise_prob=0.9, channel_prob=0.5, gain_db=(-6, 6))
    device = DeviceAugmenter(cfg, DinoSpeechFeatureExtractor(), "cpu")
    x = _t(speech_like(np.random.default_rng(0), 6, 4000))
    planner = device.planner()
    plan = collate_plans([planner.plan(6, 4000, np.random.default_rng(3))], 6)
    torch.manual_seed(0)
    a = device.augment(x, plan)
    torch.manual_seed(1)  # the global generator plays no part
    b = DeviceAugmenter(cfg, DinoSpeechFeatureExtractor(), "cpu").augment(x, plan)
    assert torch.equal(a, b)
    other = collate_plans([planner.plan(6, 4000, np.random.default_rng(4))], 6)
    assert not torch.equal(a, device.augment(x, other))


# --------------------------------------------------------------------------------------------- the loader


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, speech_like(rng, 1, int(SR * rng.uniform(1.0, 2.0)))[0], SR, subtype="PCM_16")
        paths.append(str(path))
    return paths


CROPS = dict(n_global=2, global_seconds=0.5, n_local=3, local_seconds=0.25)


def test_raw_loader_and_device_augmenter_give_the_cpu_loaders_features(corpus, sources):
    musan, rirs = sources
    fe = DinoSpeechFeatureExtractor()
    crop_cfg = MultiCropConfig(**CROPS)
    # (no channel here: its stop band leaves float32 rounding noise in the top mel bands of both paths, whose logs
    # differ; the channel's waveforms are compared above)
    for aug_cfg in (None, AugmentConfig(musan_root=musan, rir_root=rirs, gain_db=(-6, 6))):
        kwargs = dict(crop_cfg=crop_cfg, aug_cfg=aug_cfg, feature_extractor=fe, batch_size=4, seed=3, epoch=1)
        cpu = list(build_multicrop_dataloader(corpus, **kwargs))
        device = DeviceAugmenter(aug_cfg, fe, "cpu")
        raw = list(build_multicrop_dataloader(corpus, device_augmenter=device, num_workers=1, **kwargs))
        assert len(cpu) == len(raw) == 2
        for a, b in zip(cpu, raw):
            assert b["global_crops"].dtype == torch.int16 and b["global_crops"].shape == (2, 4, 8000)
            assert torch.equal(a["index"], b["index"])
            featurised = device(b)
            for key in ("global_features", "local_features"):
                assert featurised[key].shape == a[key].shape
                diff = (featurised[key] - a[key]).abs()
                assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.05  # log-mel of near-equal audio


def test_raw_loader_refuses_mismatched_settings(corpus):
    fe = DinoSpeechFeatureExtractor()
    device = DeviceAugmenter(None, fe, "cpu")
    with pytest.raises(ValueError, match="augmentation settings"):
        build_multicrop_dataloader(corpus, MultiCropConfig(**CROPS), AugmentConfig(), fe, device_augmenter=device)


def test_banks_too_big_for_the_accelerator_stay_in_host_memory():
    from modeling_dino_speech.data.device_augment import bank_device

    gpu = torch.device("cuda", 0)
    assert bank_device(10**9, gpu, total_memory=80 * 10**9) == gpu
    assert bank_device(30 * 10**9, gpu, total_memory=80 * 10**9) == torch.device("cpu")
    assert bank_device(10**12, torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_device_path_is_the_cpu_path(sources, corpus):
    """Where a GPU is lent: bank on the GPU, pinned raw batches, the same augmentations and features."""
    musan, rirs = sources
    # (no codec: a sample on a G.711 step may round either way on two devices)
    cfg = AugmentConfig(musan_root=musan, rir_root=rirs, channel_prob=0.5, gain_db=(-6, 6))
    fe = DinoSpeechFeatureExtractor()
    on_gpu, on_cpu = DeviceAugmenter(cfg, fe, "cuda"), DeviceAugmenter(cfg, fe, "cpu")
    assert on_gpu.bank.segments["audio"].is_cuda
    x = speech_like(np.random.default_rng(0), 6, 8000)
    for seed in range(4):
        plan = collate_plans([on_gpu.planner().plan(6, 8000, np.random.default_rng(seed))], 6)
        _close(on_gpu.augment(_t(x).cuda(), plan).cpu().numpy(), on_cpu.augment(_t(x), plan).numpy(), 1e-4)
    kwargs = dict(crop_cfg=MultiCropConfig(**CROPS), aug_cfg=cfg, feature_extractor=fe, batch_size=4, seed=3)
    batch = next(iter(build_multicrop_dataloader(corpus, device_augmenter=on_gpu, pin_memory=True, **kwargs)))
    assert batch["global_crops"].is_pinned()
    featurised = on_gpu(batch)
    assert featurised["global_features"].is_cuda and torch.isfinite(featurised["local_features"]).all()


# --------------------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_with_device_augmentation_resumes_bit_identically_after_sigkill(tmp_path):
    """As tests/test_train_dino.py does for the CPU path: kill -9 after a checkpoint, resume, same weights."""
    from helpers import make_corpus
    from test_train_dino import assert_same_training_state, common, kill_at_checkpoint_and_resume, run_train

    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=6)
    # generated noise and impulse responses, babble from the pool (the demo's mix), and channels
    device = ["save_every=2", "data.augment_on=device", "data.augment.channel_prob=0.3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_train(common(manifest, straight, 10, device))
    assert result.returncode == 0, result.stderr[-4000:]
    resumed = kill_at_checkpoint_and_resume(common(manifest, killed, 10, device), killed)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert_same_training_state(straight, killed)
