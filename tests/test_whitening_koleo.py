"""Embedding whitening stored in the model, and the regularisers against dimensional collapse (KoLeo,
dimension regularisation)."""

import math

import numpy as np
import pytest
import torch

from modeling_dino_speech import DimensionRegularization, DinoSpeechConfig, DinoSpeechModel, KoLeoLoss
from modeling_dino_speech.training.whitening import fit_whitening, fit_within_class_whitening


def test_fit_whitening_makes_the_pool_isotropic():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((2000, 8)) @ rng.standard_normal((8, 8)) * 5 + 3
    mean, transform = fit_whitening(pool)
    white = (pool - mean.numpy()) @ transform.numpy()
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(8), atol=1e-3)
    with pytest.raises(ValueError, match="N >= 2"):
        fit_whitening(pool[:1])


def test_a_lower_power_whitens_part_of_the_way():
    rng = np.random.default_rng(0)
    scales = np.array([8.0, 4.0, 2.0, 1.0])
    pool = rng.standard_normal((4000, 4)) * scales
    mean, transform = fit_whitening(pool, power=0.25)
    spread = np.sqrt(np.diag(np.cov((pool - mean.numpy()) @ transform.numpy(), rowvar=False)))
    # the principal directions keep the square root of their standard deviations: 8:4:2:1 becomes about 2.8:2:1.4:1
    np.testing.assert_allclose(np.sort(spread)[::-1] / spread.min(), np.sqrt(scales), rtol=0.05)
    _, rotation = fit_whitening(pool, power=0.0)
    np.testing.assert_allclose(rotation.numpy() @ rotation.numpy().T, np.eye(4), atol=1e-5)


def test_within_class_whitening_turns_the_clusters_covariance_into_the_identity():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((6, 5)) * 4
    within = rng.standard_normal((5, 5))  # the same elongated spread inside every class
    labels = np.repeat(np.arange(6), 200)
    x = centres[labels] + rng.standard_normal((1200, 5)) @ within
    labels_with_unclustered = np.concatenate([labels, -np.ones(50, dtype=int)])
    x_with_unclustered = np.concatenate([x, rng.standard_normal((50, 5)) * 100])  # -1 rows must not count
    transform = fit_within_class_whitening(x_with_unclustered, labels_with_unclustered, shrinkage=0.0).numpy()
    y = x @ transform
    means = np.stack([y[labels == c].mean(axis=0) for c in range(6)])
    np.testing.assert_allclose(np.cov(y - means[labels], rowvar=False, bias=True), np.eye(5), atol=0.05)
    # full shrinkage only rescales: every direction by the same factor
    scaled = fit_within_class_whitening(x, labels, shrinkage=1.0).numpy()
    np.testing.assert_allclose(scaled, np.eye(5) * scaled[0, 0], atol=1e-5)
    with pytest.raises(ValueError, match="two classes"):
        fit_within_class_whitening(x, np.where(labels == 0, 0, -1), 0.1)
    with pytest.raises(ValueError, match="shrinkage"):
        fit_within_class_whitening(x, labels, 1.5)
    with pytest.raises(ValueError, match=r"\(N,\) labels"):
        fit_within_class_whitening(x, labels[:10], 0.1)


def test_eigenvalue_floor_keeps_unused_directions_from_blowing_up():
    rng = np.random.default_rng(1)
    pool = np.concatenate([rng.standard_normal((500, 3)), np.zeros((500, 2))], axis=1)
    _, transform = fit_whitening(pool, eigenvalue_floor=1e-2)
    assert np.isfinite(transform.numpy()).all() and np.abs(transform.numpy()).max() < 20


def test_whitening_is_stored_in_the_checkpoint(tmp_path, tiny_config):
    model = DinoSpeechModel(tiny_config).eval()
    features = torch.randn(3, 120, tiny_config.num_mel_bins)
    with torch.no_grad():
        raw = model(features).embeddings
    noise = np.random.default_rng(2).normal(size=(12, raw.shape[1]))
    mean, transform = fit_whitening(raw.numpy().repeat(4, axis=0) + noise)
    model.set_embedding_whitening(mean, transform)
    with torch.no_grad():
        white = model(features).embeddings
    torch.testing.assert_close(white, (raw - mean) @ transform)
    model.save_pretrained(tmp_path)
    loaded = DinoSpeechModel.from_pretrained(tmp_path).eval()
    assert loaded.config.embedding_whitening
    with torch.no_grad():
        torch.testing.assert_close(loaded(features).embeddings, white)
    loaded.set_embedding_whitening(None)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features).embeddings, raw)
    with pytest.raises(ValueError, match="whitening needs"):
        model.set_embedding_whitening(mean[:2], transform)


def test_a_model_without_whitening_has_no_whitening_tensors(tmp_path, tiny_config):
    assert not DinoSpeechConfig().embedding_whitening
    DinoSpeechModel(tiny_config).save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert not [k for k in handle.keys() if "whitening" in k]  # noqa: SIM118


def test_koleo_is_larger_for_crowded_points_and_pushes_them_apart():
    koleo = KoLeoLoss()
    rng = torch.Generator().manual_seed(0)
    spread = torch.randn(64, 16, generator=rng)
    crowded = torch.randn(1, 16, generator=rng) + 0.01 * torch.randn(64, 16, generator=rng)
    assert koleo(crowded) > koleo(spread) + 1.0
    x = crowded.clone().requires_grad_(True)
    koleo(x).backward()
    stepped = (x - 0.5 * x.grad).detach()
    assert koleo(stepped) < koleo(crowded)
    with pytest.raises(ValueError, match="two embeddings"):
        koleo(torch.randn(1, 4))


def test_dimension_regularization_is_zero_for_an_even_spread_and_log_d_for_a_line():
    reg = DimensionRegularization()
    rng = torch.Generator().manual_seed(0)
    even = torch.randn(4096, 16, generator=rng)
    assert 0 <= reg(even) < 0.02
    line = torch.randn(256, 1, generator=rng).sign() * torch.ones(1, 16) + 1e-3 * torch.randn(256, 16, generator=rng)
    assert reg(line) == pytest.approx(math.log(16), abs=0.05)
    # a batch in 4 of 16 directions uses a quarter of them; row norms do not count
    four = torch.cat([torch.randn(4096, 4, generator=rng), torch.zeros(4096, 12)], dim=1)
    assert reg(four) == pytest.approx(math.log(4), abs=0.02)
    assert reg(four * torch.rand(4096, 1, generator=rng).add(0.5)) == pytest.approx(float(reg(four)), abs=1e-4)
    # a gradient step spreads an uneven batch
    uneven = torch.randn(512, 16, generator=rng) * torch.linspace(0.1, 3.0, 16)
    x = uneven.clone().requires_grad_(True)
    reg(x).backward()
    assert reg((x - 0.5 * x.grad).detach()) < reg(uneven)
    with pytest.raises(ValueError, match="two embeddings"):
        reg(torch.randn(1, 4))


@pytest.mark.parametrize("loss", [KoLeoLoss(), DimensionRegularization()], ids=["koleo", "dimension_reg"])
def test_collapse_regularizers_compute_in_float32_under_bf16_autocast(loss):
    """Under autocast a plain matmul runs in bf16 and rounds each covariance entry or cosine to about three
    digits; the regularisers must give their float32 value, as under the recipe's `mixed_precision: bf16`."""
    embeddings = torch.randn(64, 192, generator=torch.Generator().manual_seed(0), requires_grad=True)
    reference = loss(embeddings)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(embeddings)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, reference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer", ["embedding", "pooled"])
def test_whitenings_from_embeddings_at_hand_match_embedding_the_files_again(tmp_path, tiny_config, layer):
    """A pseudo-label round that trains nothing fits both whitenings from the one pass it clustered with."""
    from helpers import make_corpus

    from modeling_dino_speech import DinoSpeechFeatureExtractor
    from modeling_dino_speech.inference import embed_files
    from modeling_dino_speech.training.whitening import whiten_on_pool, whiten_within_classes

    manifest = make_corpus(tmp_path, speakers=3, per_speaker=8, seconds=(0.8, 1.6))
    paths = [str(tmp_path / line.split(",")[0]) for line in manifest.read_text().splitlines()[1:]]
    labels = np.repeat(np.arange(3), 8)
    # fewer dimensions than files
    config = DinoSpeechConfig(**{**tiny_config.to_dict(), "embedding_size": 8, "embedding_layer": layer})
    extractor = DinoSpeechFeatureExtractor.from_model_config(config)
    torch.manual_seed(0)
    again, at_hand = DinoSpeechModel(config).eval(), DinoSpeechModel(config).eval()
    at_hand.load_state_dict(again.state_dict())
    unwhitened = embed_files(again, extractor, paths, progress=False)

    summaries = []
    for model, embeddings in ((again, None), (at_hand, unwhitened)):
        summary = whiten_on_pool(model, extractor, paths, utterances=20, seed=3, embeddings=embeddings)
        kept = slice(4, None)
        summary.update(
            whiten_within_classes(
                model,
                extractor,
                paths[kept],
                labels[kept],
                0.1,
                embeddings=None if embeddings is None else embeddings[kept],
            )
        )
        summaries.append(summary)
    assert summaries[0] == summaries[1] and summaries[0]["whitening_utterances"] == 20
    assert at_hand.whitened_layers == (("embedding",) if layer == "embedding" else ("embedding", "pooled"))
    for name in at_hand.whitened_layers:
        ours, theirs = at_hand.layer_whitening(name), again.layer_whitening(name)
        torch.testing.assert_close(ours.mean, theirs.mean, rtol=1e-4, atol=1e-5)
        # eigenvectors have arbitrary signs: compare the metric the transform gives cosine scoring
        metric = [w.transform @ w.transform.T for w in (ours, theirs)]
        torch.testing.assert_close(metric[0], metric[1], rtol=1e-3, atol=1e-3 * float(metric[1].abs().max()))
    with pytest.raises(ValueError, match="3 embeddings given for 24 files"):
        whiten_on_pool(at_hand, extractor, paths, embeddings=unwhitened[:3])


def test_pooled_layer_gives_the_embeddings_and_the_heads_keep_the_embedding_layer(tmp_path, tiny_config):
    from modeling_dino_speech import DinoSpeechForPreTraining
    from modeling_dino_speech.training.whitening import whitening_removed

    config = DinoSpeechConfig(**{**tiny_config.to_dict(), "embedding_layer": "pooled"})
    torch.manual_seed(0)
    model = DinoSpeechModel(config).eval()
    features = torch.randn(3, 120, config.num_mel_bins)
    pooled_size = model.pooling.output_size
    assert pooled_size != config.embedding_size
    with torch.no_grad():
        pooled = model(features).embeddings
        embedding = model(features, embedding_layer="embedding").embeddings
    assert pooled.shape == (3, pooled_size) and embedding.shape == (3, config.embedding_size)
    # the embedding layer is one linear map of the pooled statistics
    torch.testing.assert_close(model.layer_outputs(pooled)["embedding"], embedding, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(0)
    for name in ("embedding", "pooled"):
        size = model.layer_size(name)
        model.set_embedding_whitening(
            torch.randn(size), torch.as_tensor(rng.normal(size=(size, size)), dtype=torch.float32), layer=name
        )
    with torch.no_grad():
        whitened = model(features).embeddings
    expected = (pooled - model.pooled_whitening.mean) @ model.pooled_whitening.transform
    torch.testing.assert_close(whitened, expected, rtol=1e-4, atol=1e-4)
    with whitening_removed(model) as stored, torch.no_grad():
        assert set(stored) == {"embedding", "pooled"} and not model.config.pooled_whitening
        torch.testing.assert_close(model(features).embeddings, pooled)
    assert model.config.embedding_whitening and model.config.pooled_whitening
    with torch.no_grad():
        torch.testing.assert_close(model(features).embeddings, whitened)
    model.save_pretrained(tmp_path / "m")
    loaded = DinoSpeechModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.embedding_layer == "pooled" and loaded.config.pooled_whitening
    with torch.no_grad():
        torch.testing.assert_close(loaded(features).embeddings, whitened)
    loaded.remove_whitening()
    assert loaded.whitening is None and loaded.pooled_whitening is None
    with pytest.raises(ValueError, match="pooled whitening needs mean"):
        loaded.set_embedding_whitening(torch.zeros(2), torch.eye(2), layer="pooled")
    with pytest.raises(ValueError, match="embedding_layer must be one of"):
        DinoSpeechConfig(embedding_layer="hidden")
    # a layer the model does not have is a clear error wherever a layer is named, not a KeyError or a wrong size
    remove = lambda layer: loaded.set_embedding_whitening(None, layer=layer)
    forward = lambda layer: loaded(features, embedding_layer=layer)
    for use in (loaded.layer_whitening, loaded.layer_size, remove, forward):
        with pytest.raises(ValueError, match="layer must be one of .*'hidden'"):
            use("hidden")
    # the DINO head reads the embedding layer whatever the embeddings are
    pretraining = DinoSpeechForPreTraining(config).eval()
    with torch.no_grad():
        out = pretraining(features)
    assert out.embeddings.shape == (3, config.embedding_size)


def test_the_pool_whitening_takes_the_recipes_eigenvalue_floor(tmp_path, tiny_config):
    from modeling_dino_speech import DinoSpeechFeatureExtractor
    from modeling_dino_speech.training.config import ExportConfig
    from modeling_dino_speech.training.whitening import whiten_on_pool

    with pytest.raises(ValueError, match="whitening_floor"):
        ExportConfig(whitening_floor=0.0)
    with pytest.raises(ValueError, match="whitening_floor"):
        ExportConfig(whitening_floor=1.5)
    with pytest.raises(ValueError, match="whitening_power"):
        ExportConfig(whitening_power=0.6)
    rng = np.random.default_rng(2)
    # a pool that uses two directions strongly and the rest hardly at all
    size = tiny_config.embedding_size
    pool = rng.standard_normal((64, size)) * np.r_[10.0, 5.0, np.full(size - 2, 0.01)]
    model = DinoSpeechModel(tiny_config).eval()
    extractor = DinoSpeechFeatureExtractor.from_model_config(tiny_config)
    paths = [f"unused_{i}.wav" for i in range(len(pool))]
    scales = {}
    for floor in (1e-4, 0.1):
        whiten_on_pool(
            model, extractor, paths, utterances=64, embeddings=pool.astype(np.float32), eigenvalue_floor=floor
        )
        _, expected = fit_whitening(pool, eigenvalue_floor=floor)
        ours = model.layer_whitening("embedding").transform
        torch.testing.assert_close(ours @ ours.T, expected @ expected.T, rtol=1e-3, atol=1e-3)
        scales[floor] = float(torch.linalg.matrix_norm(ours, ord=2))
    # with the higher floor the hardly used directions are no longer blown up to the scale of the used ones
    assert scales[1e-4] > 10 * scales[0.1]
