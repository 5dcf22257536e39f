import numpy as np
import pytest
import torch

from modeling_dino_speech import (
    DinoSpeechConfig,
    DinoSpeechFeatureExtractor,
    DinoSpeechForPreTraining,
    DinoSpeechForXVector,
    DinoSpeechModel,
)

BACKBONES = {
    "resnet": dict(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=32),
    "ecapa": dict(
        backbone="ecapa_tdnn",
        ecapa_channels=64,
        ecapa_mfa_channels=192,
        embedding_size=32,
        pooling="attentive_statistics",
        attention_channels=16,
    ),
    "resnet_asp": dict(
        resnet_layers=[1, 1, 1, 1],
        resnet_base_width=8,
        embedding_size=32,
        pooling="attentive_statistics",
        attention_channels=16,
    ),
}

# Parameter counts of the standard configurations (embedding model only, no head). wespeaker reports
# ResNet34 6.63M, ECAPA-TDNN c512 6.19M and c1024 14.65M for 256-d / 192-d / 192-d embeddings.
STANDARD = {
    "light ResNet34 (paper), 256-d": (dict(resnet_base_width=16), 1.99),
    "ResNet34 (wespeaker), 256-d": (dict(resnet_base_width=32), 6.63),
    "ECAPA-TDNN C=512, 192-d": (dict(backbone="ecapa_tdnn", pooling="attentive_statistics", embedding_size=192), 6.19),
    "ECAPA-TDNN C=1024, 192-d": (
        dict(backbone="ecapa_tdnn", ecapa_channels=1024, pooling="attentive_statistics", embedding_size=192),
        14.66,
    ),
}


@pytest.mark.parametrize("name", list(STANDARD))
def test_standard_parameter_counts(name, capsys):
    kwargs, millions = STANDARD[name]
    model = DinoSpeechModel(DinoSpeechConfig(**kwargs))
    count = sum(p.numel() for p in model.parameters()) / 1e6
    with capsys.disabled():
        print(f"\n{name}: {count:.3f}M parameters")
    assert abs(count - millions) < 0.01


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_padding_never_leaks(kind):
    torch.manual_seed(0)
    model = DinoSpeechModel(DinoSpeechConfig(**BACKBONES[kind])).eval()
    lengths = [173, 96, 41]
    feats = torch.randn(3, max(lengths), 80)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    feats = feats * mask[..., None] + (1 - mask[..., None]) * 1e3  # garbage in the padding must not matter
    with torch.no_grad():
        batched = model(feats, mask).embeddings
        for i, n in enumerate(lengths):
            alone = model(feats[i : i + 1, :n]).embeddings[0]
            torch.testing.assert_close(batched[i], alone, atol=1e-4, rtol=1e-4)


def test_output_shapes_and_tuple(tiny_config):
    model = DinoSpeechModel(tiny_config).eval()
    out = model(torch.randn(2, 64, 80))
    assert out.embeddings.shape == (2, 32)
    assert out.last_hidden_state.shape == (2, 8, 64 * 10)
    assert out.output_attention_mask.shape == (2, 8)
    assert model(torch.randn(2, 64, 80), return_dict=False)[0].shape == (2, 32)
    with pytest.raises(ValueError, match="input_features must be"):
        model(torch.randn(2, 64, 40))


@pytest.mark.parametrize("kind", ["resnet", "ecapa"])
def test_save_load_round_trip(tmp_path, kind):
    from transformers import AutoModel, AutoModelForAudioXVector, AutoModelForPreTraining

    import modeling_dino_speech  # noqa: F401  registers the Auto classes

    config = DinoSpeechConfig(
        **BACKBONES[kind], num_labels=7, dino_num_prototypes=64, dino_hidden_size=32, dino_bottleneck_size=16
    )
    x = torch.randn(2, 120, 80)
    for cls, auto in (
        (DinoSpeechModel, AutoModel),
        (DinoSpeechForXVector, AutoModelForAudioXVector),
        (DinoSpeechForPreTraining, AutoModelForPreTraining),
    ):
        model = cls(config).eval()
        path = tmp_path / cls.__name__
        model.save_pretrained(path)
        assert (path / "model.safetensors").exists()
        loaded = auto.from_pretrained(path).eval()
        assert type(loaded) is cls
        with torch.no_grad():
            for a, b in zip(model(x, return_dict=False), loaded(x, return_dict=False)):
                if a is not None:
                    torch.testing.assert_close(a, b, atol=0, rtol=0)
    # the embedding model of a pre-training checkpoint loads with AutoModel
    base = AutoModel.from_pretrained(tmp_path / "DinoSpeechForPreTraining").eval()
    pre = DinoSpeechForPreTraining.from_pretrained(tmp_path / "DinoSpeechForPreTraining").eval()
    with torch.no_grad():
        torch.testing.assert_close(base(x).embeddings, pre.dino_speech(x).embeddings, atol=0, rtol=0)


def test_config_that_does_not_fit_checkpoint_is_rejected(tmp_path, tiny_config):
    DinoSpeechModel(tiny_config).save_pretrained(tmp_path)
    wrong = DinoSpeechConfig(**{**tiny_config.to_diff_dict(), "resnet_base_width": 16})
    with pytest.raises(Exception, match="(?i)size mismatch|mismatch"):
        DinoSpeechModel.from_pretrained(tmp_path, config=wrong)


def test_xvector_loss_decreases_on_separable_toy_problem():
    torch.manual_seed(0)
    config = DinoSpeechConfig(**BACKBONES["ecapa"], num_labels=3, aam_margin=0.2, aam_scale=30.0, aam_subcenters=2)
    model = DinoSpeechForXVector(config).train()
    # three "speakers" = three spectral tilts
    base = torch.stack([torch.linspace(-1, 1, 80) * s for s in (-2.0, 0.0, 2.0)])
    labels = torch.arange(3).repeat(4)
    feats = base[labels][:, None, :] + 0.3 * torch.randn(12, 50, 80)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        out = model(feats, labels=labels)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.loss.item())
    assert out.logits.shape == (12, 3) and out.embeddings.shape == (12, 32)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        assert (model(feats).logits.argmax(-1) == labels).float().mean() == 1.0


def test_aam_softmax_leaves_rows_without_a_class_out_of_the_loss():
    from modeling_dino_speech.losses import AAMSoftmax

    torch.manual_seed(0)
    aam = AAMSoftmax(8, 3, margin=0.3, scale=10.0)
    embeddings = torch.randn(6, 8)
    labels = torch.tensor([0, 2, -1, 1, -1, 2])
    logits, loss = aam(embeddings, labels)
    kept = labels >= 0
    kept_logits, kept_loss = aam(embeddings[kept], labels[kept])
    torch.testing.assert_close(loss, kept_loss)
    torch.testing.assert_close(logits[kept], kept_logits)
    # the unlabelled rows get the plain scaled cosines, no margin anywhere
    torch.testing.assert_close(logits[~kept], 10.0 * aam.cosine(embeddings[~kept]))
    with pytest.raises(ValueError, match="every label of the batch is negative"):
        aam(embeddings, torch.full((6,), -1))


def test_pretraining_head_shapes_and_fixed_norm(tiny_config):
    model = DinoSpeechForPreTraining(tiny_config)
    out = model(torch.randn(3, 40, 80))
    assert out.logits.shape == (3, 128) and out.embeddings.shape == (3, 32)
    # with the norm fixed, logits are cosines: bounded by 1
    assert out.logits.abs().max() <= 1.0 + 1e-5
    assert not model.dino_head.last_layer.weight_g.requires_grad


def test_feature_extractor_to_embedding_end_to_end(tiny_config):
    fe = DinoSpeechFeatureExtractor.from_model_config(tiny_config)
    model = DinoSpeechModel(tiny_config).eval()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000)]
    batch = fe(waves, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        emb = model(**batch).embeddings
        alone = model(**fe(waves[1], sampling_rate=16000, return_tensors="pt")).embeddings
    torch.testing.assert_close(emb[1:], alone, atol=1e-4, rtol=1e-4)


def test_aam_softmax_computes_its_cosines_in_float32_under_bf16_autocast():
    """The margin shifts cosines near 1, where bf16 keeps about three digits: the loss must not depend on autocast."""
    from modeling_dino_speech.losses import AAMSoftmax

    head = AAMSoftmax(embedding_size=16, num_labels=5)
    torch.nn.init.normal_(head.weight, generator=torch.Generator().manual_seed(1))
    embeddings = torch.randn(12, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(12) % 5
    logits, loss = head(embeddings, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_autocast, loss_autocast = head(embeddings, labels)
    assert logits_autocast.dtype == torch.float32
    assert torch.allclose(logits_autocast, logits, atol=1e-5)
    assert torch.allclose(loss_autocast, loss, atol=1e-6)
