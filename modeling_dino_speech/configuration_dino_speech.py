"""Configuration of DINO speech-embedding models."""

from __future__ import annotations

from typing import Optional, Sequence

from transformers import PretrainedConfig

BACKBONES = ("resnet", "ecapa_tdnn")
POOLINGS = ("statistics", "attentive_statistics")
EMBEDDING_LAYERS = ("embedding", "pooled")
MEAN_NORMALIZATIONS = ("sliding", "utterance", None)


class DinoSpeechConfig(PretrainedConfig):
    r"""Configuration of [`DinoSpeechModel`], [`DinoSpeechForXVector`] and [`DinoSpeechForPreTraining`].

    Defaults reproduce the paper's "light" ResNet34 (16 base channels, statistics pooling, 256-d embedding)
    with its DINO head (2048 hidden, 256 bottleneck, K = 65536 prototypes).

    Args:
        backbone: `"resnet"` (2-D ResNet over time x frequency) or `"ecapa_tdnn"` (1-D, channels = mel bins).
        resnet_layers: residual blocks per stage; `[3, 4, 6, 3]` is ResNet34.
        resnet_base_width: channels of the first stage; 16 is the paper's light ResNet34, 32 wespeaker's.
        ecapa_channels: C of ECAPA-TDNN (512 or 1024).
        ecapa_scale: Res2Net scale of the SE-Res2 blocks.
        ecapa_se_channels: bottleneck of the squeeze-excitation blocks.
        ecapa_mfa_channels: output channels of the multi-layer feature aggregation conv (1536 in ECAPA).
        pooling: `"statistics"` (mean and standard deviation over time) or `"attentive_statistics"`.
        attention_channels: hidden size of the attention in attentive statistics pooling.
        embedding_size: size of the utterance embedding.
        num_mel_bins, sampling_rate, frame_length_ms, frame_shift_ms, low_freq, high_freq, mean_normalization,
        mean_normalization_window: fbank front end; the feature extractor is built from these so that a
            checkpoint and its features cannot disagree (see `DinoSpeechFeatureExtractor.from_model_config`).
        dino_hidden_size, dino_bottleneck_size, dino_num_prototypes, dino_num_layers, dino_norm_last_layer:
            the DINO projection head (MLP -> L2-normalised bottleneck -> weight-normalised prototypes).
        aam_margin, aam_scale, aam_subcenters: additive angular margin softmax of [`DinoSpeechForXVector`].
        embedding_layer: where [`DinoSpeechModel`]'s `embeddings` come from: `"embedding"` (the embedding layer,
            `embedding_size` dimensions, what the DINO head and the AAM-softmax read) or `"pooled"` (the pooled
            statistics it maps, after their normalisation: in self-supervised training the layer before the one
            the loss sees tends to carry more of what the loss does not ask for). The heads always read the
            embedding layer.
        embedding_whitening: whiten the embedding layer with a mean and a transform stored in the checkpoint
            (estimated without labels on the training pool when the model is exported; off while training).
        pooled_whitening: the same for the pooled statistics (with `embedding_layer="pooled"`).
        verification_threshold: the cosine score above which two utterances are taken for the same speaker,
            calibrated when the model is exported (the EER threshold on its evaluation trials; None: not
            calibrated). `DinoSpeechVerifier` decides with it.
        verification_calibration: where that threshold comes from: the trial list, the operating point and the
            measured EER / minDCF with their thresholds (see `modeling_dino_speech.calibration`).
    """

    model_type = "dino_speech"

    def __init__(
        self,
        backbone: str = "resnet",
        resnet_layers: Sequence[int] = (3, 4, 6, 3),
        resnet_base_width: int = 16,
        ecapa_channels: int = 512,
        ecapa_scale: int = 8,
        ecapa_se_channels: int = 128,
        ecapa_mfa_channels: int = 1536,
        pooling: str = "statistics",
        attention_channels: int = 128,
        embedding_size: int = 256,
        num_mel_bins: int = 80,
        sampling_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 7600.0,
        mean_normalization: Optional[str] = "sliding",
        mean_normalization_window: int = 150,
        dino_hidden_size: int = 2048,
        dino_bottleneck_size: int = 256,
        dino_num_prototypes: int = 65536,
        dino_num_layers: int = 3,
        dino_norm_last_layer: bool = True,
        aam_margin: float = 0.2,
        aam_scale: float = 30.0,
        aam_subcenters: int = 1,
        embedding_layer: str = "embedding",
        embedding_whitening: bool = False,
        pooled_whitening: bool = False,
        verification_threshold: Optional[float] = None,
        verification_calibration: Optional[dict] = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if mean_normalization not in MEAN_NORMALIZATIONS:
            raise ValueError(f"mean_normalization must be one of {MEAN_NORMALIZATIONS}, got {mean_normalization!r}")
        if embedding_layer not in EMBEDDING_LAYERS:
            raise ValueError(f"embedding_layer must be one of {EMBEDDING_LAYERS}, got {embedding_layer!r}")
        if aam_subcenters < 1:
            raise ValueError(f"aam_subcenters must be >= 1, got {aam_subcenters}")
        self.backbone = backbone
        self.resnet_layers = list(resnet_layers)
        self.resnet_base_width = resnet_base_width
        self.ecapa_channels = ecapa_channels
        self.ecapa_scale = ecapa_scale
        self.ecapa_se_channels = ecapa_se_channels
        self.ecapa_mfa_channels = ecapa_mfa_channels
        self.pooling = pooling
        self.attention_channels = attention_channels
        self.embedding_size = embedding_size
        self.num_mel_bins = num_mel_bins
        self.sampling_rate = sampling_rate
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.low_freq = low_freq
        self.high_freq = high_freq
        self.mean_normalization = mean_normalization
        self.mean_normalization_window = mean_normalization_window
        self.dino_hidden_size = dino_hidden_size
        self.dino_bottleneck_size = dino_bottleneck_size
        self.dino_num_prototypes = dino_num_prototypes
        self.dino_num_layers = dino_num_layers
        self.dino_norm_last_layer = dino_norm_last_layer
        self.aam_margin = aam_margin
        self.aam_scale = aam_scale
        self.aam_subcenters = aam_subcenters
        self.embedding_layer = embedding_layer
        self.embedding_whitening = embedding_whitening
        self.pooled_whitening = pooled_whitening
        self.verification_threshold = None if verification_threshold is None else float(verification_threshold)
        self.verification_calibration = dict(verification_calibration) if verification_calibration else None
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    @property
    def feature_extractor_kwargs(self) -> dict:
        """The fbank settings as keyword arguments of `DinoSpeechFeatureExtractor`."""
        return {
            "feature_size": self.num_mel_bins,
            "sampling_rate": self.sampling_rate,
            "frame_length_ms": self.frame_length_ms,
            "frame_shift_ms": self.frame_shift_ms,
            "low_freq": self.low_freq,
            "high_freq": self.high_freq,
            "mean_normalization": self.mean_normalization,
            "mean_normalization_window": self.mean_normalization_window,
        }


DinoSpeechConfig.register_for_auto_class()
