"""DINO speech models: the utterance-embedding model, its AAM-softmax x-vector head, and its DINO pre-training
head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_dino_speech import EMBEDDING_LAYERS, DinoSpeechConfig
from .dino_head import DINOHead, WeightNormalizedLinear
from .ecapa_tdnn import ECAPATDNN
from .losses import AAMSoftmax
from .pipeline_dino_speech import CUSTOM_PIPELINES
from .pooling import build_pooling, lengths_to_mask
from .resnet import ResNet


@dataclass
class DinoSpeechModelOutput(ModelOutput):
    """
    Args:
        embeddings: `(batch, D)` utterance embeddings (compare them with cosine similarity): the layer that
            `config.embedding_layer` names (D = `embedding_size`, or the pooled statistics' size), whitened when
            the checkpoint stores a whitening for it.
        last_hidden_state: `(batch, frames_out, channels)` frame-level backbone output (frames_out = T/8 for
            the ResNet, T for ECAPA-TDNN).
        output_attention_mask: `(batch, frames_out)` 1 on real frames of `last_hidden_state`.
    """

    embeddings: Optional[torch.FloatTensor] = None
    last_hidden_state: Optional[torch.FloatTensor] = None
    output_attention_mask: Optional[torch.LongTensor] = None


@dataclass
class DinoSpeechXVectorOutput(ModelOutput):
    """
    Args:
        loss: AAM-softmax cross-entropy (when `labels` are given).
        logits: `(batch, num_labels)` scaled cosines (with the margin on the true class when labels are given).
        embeddings: `(batch, embedding_size)` utterance embeddings.
        last_hidden_state: `(batch, frames_out, channels)`.
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    embeddings: Optional[torch.FloatTensor] = None
    last_hidden_state: Optional[torch.FloatTensor] = None


@dataclass
class DinoSpeechPreTrainingOutput(ModelOutput):
    """
    Args:
        logits: `(batch, dino_num_prototypes)` DINO head output (before temperature).
        embeddings: `(batch, embedding_size)` utterance embeddings the head was applied to.
    """

    logits: Optional[torch.FloatTensor] = None
    embeddings: Optional[torch.FloatTensor] = None


# layer -> (the model's attribute holding its whitening, the config flag that says it has one)
_WHITENING_OF_LAYER = {
    "embedding": ("whitening", "embedding_whitening"),
    "pooled": ("pooled_whitening", "pooled_whitening"),
}


class EmbeddingWhitening(nn.Module):
    """`(x - mean) @ transform` on `(batch, D)` outputs of a layer, with both estimated on the unlabeled
    training pool when a model is exported (PCA whitening): cosine scoring then weighs every direction of the
    pool's embedding space alike, instead of letting the few dominant ones (in an unlabeled pool: channel, level,
    language) decide. Buffers, not parameters: nothing here is trained."""

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("transform", torch.eye(size))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (embeddings - self.mean.to(embeddings.dtype)) @ self.transform.to(embeddings.dtype)


# Every checkpoint names every head, so that with trust_remote_code=True the embedding model loads with
# AutoModel from an x-vector or pre-training checkpoint too (the package need not be installed).
_AUTO_MAP = {
    "AutoConfig": "configuration_dino_speech.DinoSpeechConfig",
    "AutoModel": "modeling_dino_speech.DinoSpeechModel",
    "AutoModelForAudioXVector": "modeling_dino_speech.DinoSpeechForXVector",
    "AutoModelForPreTraining": "modeling_dino_speech.DinoSpeechForPreTraining",
}


class DinoSpeechPreTrainedModel(PreTrainedModel):
    config_class = DinoSpeechConfig
    base_model_prefix = "dino_speech"
    main_input_name = "input_features"
    supports_gradient_checkpointing = False

    def __init__(self, config: DinoSpeechConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        config.auto_map = {**_AUTO_MAP, **(getattr(config, "auto_map", None) or {})}
        # ... and its pipeline (`pipeline("speaker-embedding", model=dir, trust_remote_code=True)`): this module
        # imports the pipeline's file, so save_pretrained copies it with the rest of the model's code.
        pipelines = {task: {**info, "pt": list(info["pt"])} for task, info in CUSTOM_PIPELINES.items()}
        config.custom_pipelines = {**pipelines, **(getattr(config, "custom_pipelines", None) or {})}

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, WeightNormalizedLinear):
            init.trunc_normal_(module.weight_v, std=self.config.initializer_range)
            init.ones_(module.weight_g)
        elif isinstance(module, AAMSoftmax):
            init.xavier_normal_(module.weight)
        elif isinstance(module, EmbeddingWhitening):
            init.zeros_(module.mean)
            init.eye_(module.transform)
        else:
            super()._init_weights(module)


class DinoSpeechModel(DinoSpeechPreTrainedModel):
    """fbank features -> backbone (ResNet or ECAPA-TDNN) -> mask-aware pooling -> utterance embedding."""

    # Loading the embedding network out of a pseudo-label (AAM-softmax) or pre-training checkpoint leaves
    # their heads behind by design: not worth a load report.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\.", r"^dino_head\."]

    def __init__(self, config: DinoSpeechConfig):
        super().__init__(config)
        if config.backbone == "resnet":
            self.backbone = ResNet(config.num_mel_bins, config.resnet_layers, config.resnet_base_width)
        else:
            self.backbone = ECAPATDNN(
                config.num_mel_bins,
                config.ecapa_channels,
                config.ecapa_scale,
                config.ecapa_se_channels,
                config.ecapa_mfa_channels,
            )
        self.pooling = build_pooling(config.pooling, self.backbone.output_channels, config.attention_channels)
        # ECAPA normalises the pooled statistics before the embedding layer; the ResNet recipes do not.
        self.pooled_norm = (
            nn.BatchNorm1d(self.pooling.output_size) if config.backbone == "ecapa_tdnn" else nn.Identity()
        )
        self.embedding = nn.Linear(self.pooling.output_size, config.embedding_size)
        self.whitening = EmbeddingWhitening(config.embedding_size) if config.embedding_whitening else None
        self.pooled_whitening = EmbeddingWhitening(self.pooling.output_size) if config.pooled_whitening else None
        self.post_init()

    @staticmethod
    def _check_layer(layer: str) -> str:
        if layer not in EMBEDDING_LAYERS:
            raise ValueError(f"layer must be one of {EMBEDDING_LAYERS}, got {layer!r}")
        return layer

    def layer_size(self, layer: str) -> int:
        """Dimensions of `layer` (`"embedding"` or `"pooled"`, see `config.embedding_layer`)."""
        return self.config.embedding_size if self._check_layer(layer) == "embedding" else self.pooling.output_size

    @property
    def output_size(self) -> int:
        """Dimensions of `embeddings` (those of the layer `config.embedding_layer` names)."""
        return self.layer_size(self.config.embedding_layer)

    @property
    def whitened_layers(self) -> tuple:
        """The layers an export whitens: the embedding layer (what the pseudo-label rounds cluster) and the one
        `embeddings` come from."""
        return ("embedding",) if self.config.embedding_layer == "embedding" else ("embedding", "pooled")

    def layer_whitening(self, layer: str) -> Optional[EmbeddingWhitening]:
        """The whitening stored for `layer` (`"embedding"` or `"pooled"`), or None when it has none."""
        return getattr(self, _WHITENING_OF_LAYER[self._check_layer(layer)][0])

    @torch.no_grad()
    def layer_outputs(self, outputs: torch.Tensor) -> dict:
        """Unwhitened `(N, D)` outputs of this model (`embeddings` with no whitening) -> the unwhitened outputs of
        each of `whitened_layers`: from the pooled statistics the embedding layer is one linear map away."""
        if self.config.embedding_layer == "embedding":
            return {"embedding": outputs}
        weight = self.embedding.weight
        return {"pooled": outputs, "embedding": self.embedding(outputs.to(weight.device, weight.dtype))}

    def remove_whitening(self) -> None:
        """Drop every stored whitening: `embeddings` are then the raw layer output."""
        for layer in EMBEDDING_LAYERS:
            self.set_embedding_whitening(None, layer=layer)

    def set_embedding_whitening(
        self, mean: Optional[torch.Tensor], transform: Optional[torch.Tensor] = None, layer: str = "embedding"
    ) -> None:
        """Whiten `layer`'s output from now on: `(x - mean) @ transform`, with `mean` `(D,)` and `transform`
        `(D, D)` (`config.embedding_whitening` or `config.pooled_whitening` follows, so a saved checkpoint keeps
        it); `mean=None` removes it."""
        attribute, flag = _WHITENING_OF_LAYER[self._check_layer(layer)]
        if mean is None:
            setattr(self, attribute, None)
            setattr(self.config, flag, False)
            return
        size = self.layer_size(layer)
        if tuple(mean.shape) != (size,) or transform is None or tuple(transform.shape) != (size, size):
            raise ValueError(
                f"{layer} whitening needs mean ({size},) and transform ({size}, {size}), got "
                f"{tuple(mean.shape)} and {None if transform is None else tuple(transform.shape)}"
            )
        parameter = self.embedding.weight
        whitening = EmbeddingWhitening(size).to(parameter.device)
        whitening.mean.copy_(mean.to(parameter.device, torch.float32))
        whitening.transform.copy_(transform.to(parameter.device, torch.float32))
        setattr(self, attribute, whitening)
        setattr(self.config, flag, True)

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        embedding_layer: Optional[str] = None,
        **kwargs,
    ) -> DinoSpeechModelOutput:
        """
        Args:
            input_features: `(batch, frames, num_mel_bins)` from [`DinoSpeechFeatureExtractor`].
            attention_mask: `(batch, frames)`, 1 on real frames, 0 on padding. Padding never reaches the
                embedding: an utterance alone and inside a padded batch embed the same (in eval mode).
            embedding_layer: the layer `embeddings` come from, instead of `config.embedding_layer` (the heads
                read `"embedding"`).
        """
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_features must be (batch, frames, {self.config.num_mel_bins}), got {tuple(input_features.shape)}"
            )
        layer = self._check_layer(embedding_layer or self.config.embedding_layer)
        batch, frames, _ = input_features.shape
        if attention_mask is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=input_features.device)
        else:
            lengths = attention_mask.sum(dim=-1).long()
            if bool((lengths == 0).any()):
                raise ValueError("attention_mask has a row with no real frame")
        hidden, out_lengths = self.backbone(input_features, lengths)
        mask = lengths_to_mask(out_lengths, hidden.shape[-1])
        pooled = self.pooling(hidden, mask if attention_mask is not None else None)
        embeddings = self.pooled_norm(pooled)
        if layer == "embedding":
            embeddings = self.embedding(embeddings)
        whitening = self.layer_whitening(layer)
        if whitening is not None:
            embeddings = whitening(embeddings)
        output = DinoSpeechModelOutput(
            embeddings=embeddings, last_hidden_state=hidden.transpose(1, 2), output_attention_mask=mask.long()
        )
        return output if return_dict is not False else output.to_tuple()


class DinoSpeechForXVector(DinoSpeechPreTrainedModel):
    """[`DinoSpeechModel`] with an additive angular margin softmax over `config.num_labels` classes, for
    supervised training on (pseudo-)labels. Returned like transformers' `XVectorOutput`."""

    def __init__(self, config: DinoSpeechConfig):
        super().__init__(config)
        self.dino_speech = DinoSpeechModel(config)
        self.classifier = AAMSoftmax(
            config.embedding_size, config.num_labels, config.aam_margin, config.aam_scale, config.aam_subcenters
        )
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> DinoSpeechXVectorOutput:
        """
        Args:
            input_features: `(batch, frames, num_mel_bins)`.
            attention_mask: `(batch, frames)`.
            labels: `(batch,)` class indices in `[0, num_labels)`; a negative one marks a row without a class, left
                out of the loss (its embedding is still returned).
        """
        base = self.dino_speech(input_features, attention_mask, embedding_layer="embedding")
        logits, loss = self.classifier(base.embeddings, labels)
        output = DinoSpeechXVectorOutput(
            loss=loss, logits=logits, embeddings=base.embeddings, last_hidden_state=base.last_hidden_state
        )
        return output if return_dict is not False else output.to_tuple()


class DinoSpeechForPreTraining(DinoSpeechPreTrainedModel):
    """[`DinoSpeechModel`] with the DINO projection head; the student and the teacher are each one of these."""

    def __init__(self, config: DinoSpeechConfig):
        super().__init__(config)
        self.dino_speech = DinoSpeechModel(config)
        self.dino_head = DINOHead(
            config.embedding_size,
            config.dino_num_prototypes,
            config.dino_hidden_size,
            config.dino_bottleneck_size,
            config.dino_num_layers,
            config.dino_norm_last_layer,
        )
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> DinoSpeechPreTrainingOutput:
        """`(batch, frames, num_mel_bins)` -> logits `(batch, dino_num_prototypes)` and embeddings."""
        embeddings = self.dino_speech(input_features, attention_mask, embedding_layer="embedding").embeddings
        output = DinoSpeechPreTrainingOutput(logits=self.dino_head(embeddings), embeddings=embeddings)
        return output if return_dict is not False else output.to_tuple()


DinoSpeechModel.register_for_auto_class("AutoModel")
DinoSpeechForXVector.register_for_auto_class("AutoModelForAudioXVector")
DinoSpeechForPreTraining.register_for_auto_class("AutoModelForPreTraining")
