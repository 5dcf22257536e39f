"""dino-speech: utterance-level speech embeddings learnt without labels (DINO), Hugging Face native.

Verify speakers in three lines:

    from modeling_dino_speech import DinoSpeechVerifier
    verifier = DinoSpeechVerifier.from_pretrained("path/or/hub-id")
    score, same_speaker = verifier.verify_files("a.wav", "b.wav")

Importing the package registers its classes with the transformers Auto API, and its "speaker-embedding"
pipeline task:

    import modeling_dino_speech
    from transformers import AutoFeatureExtractor, AutoModel
    model = AutoModel.from_pretrained("path/or/hub-id")
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioXVector,
    AutoModelForPreTraining,
)

from .configuration_dino_speech import DinoSpeechConfig
from .dino_head import DINOHead
from .feature_extraction_dino_speech import DegenerateAudioWarning, DinoSpeechFeatureExtractor
from .losses import AAMSoftmax, DimensionRegularization, DINOLoss, KoLeoLoss
from .modeling_dino_speech import (
    DinoSpeechForPreTraining,
    DinoSpeechForXVector,
    DinoSpeechModel,
    DinoSpeechModelOutput,
    DinoSpeechPreTrainedModel,
    DinoSpeechPreTrainingOutput,
    DinoSpeechXVectorOutput,
)
from .pipeline_dino_speech import PIPELINE_TASKS, DinoSpeechEmbeddingPipeline
from .verifier import DinoSpeechVerifier, Identification, SpeakerGallery, VerificationResult

__version__ = "0.1.0"

AutoConfig.register(DinoSpeechConfig.model_type, DinoSpeechConfig, exist_ok=True)
AutoFeatureExtractor.register(DinoSpeechConfig, DinoSpeechFeatureExtractor, exist_ok=True)
AutoModel.register(DinoSpeechConfig, DinoSpeechModel, exist_ok=True)
AutoModelForAudioXVector.register(DinoSpeechConfig, DinoSpeechForXVector, exist_ok=True)
AutoModelForPreTraining.register(DinoSpeechConfig, DinoSpeechForPreTraining, exist_ok=True)


def _register_pipeline() -> None:
    """`pipeline("speaker-embedding", model=<a loaded DinoSpeechModel>, feature_extractor=...)` in this process
    (a checkpoint folder or Hub id names its pipeline itself, for `trust_remote_code=True`)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_TASKS[0] not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASKS[0], pipeline_class=DinoSpeechEmbeddingPipeline, pt_model=AutoModel, type="audio"
        )


_register_pipeline()

__all__ = [
    "AAMSoftmax",
    "DINOHead",
    "DINOLoss",
    "DegenerateAudioWarning",
    "DimensionRegularization",
    "DinoSpeechConfig",
    "DinoSpeechEmbeddingPipeline",
    "DinoSpeechFeatureExtractor",
    "DinoSpeechForPreTraining",
    "DinoSpeechForXVector",
    "DinoSpeechModel",
    "DinoSpeechModelOutput",
    "DinoSpeechPreTrainedModel",
    "DinoSpeechPreTrainingOutput",
    "DinoSpeechVerifier",
    "DinoSpeechXVectorOutput",
    "Identification",
    "KoLeoLoss",
    "SpeakerGallery",
    "VerificationResult",
]
