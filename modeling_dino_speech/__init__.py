"""dino-speech: utterance-level speech embeddings learnt without labels (DINO), Hugging Face native.

Importing the package registers its classes with the transformers Auto API:

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
from .feature_extraction_dino_speech import DinoSpeechFeatureExtractor
from .losses import AAMSoftmax, DINOLoss, KoLeoLoss
from .modeling_dino_speech import (
    DinoSpeechForPreTraining,
    DinoSpeechForXVector,
    DinoSpeechModel,
    DinoSpeechModelOutput,
    DinoSpeechPreTrainedModel,
    DinoSpeechPreTrainingOutput,
    DinoSpeechXVectorOutput,
)

__version__ = "0.1.0"

AutoConfig.register(DinoSpeechConfig.model_type, DinoSpeechConfig, exist_ok=True)
AutoFeatureExtractor.register(DinoSpeechConfig, DinoSpeechFeatureExtractor, exist_ok=True)
AutoModel.register(DinoSpeechConfig, DinoSpeechModel, exist_ok=True)
AutoModelForAudioXVector.register(DinoSpeechConfig, DinoSpeechForXVector, exist_ok=True)
AutoModelForPreTraining.register(DinoSpeechConfig, DinoSpeechForPreTraining, exist_ok=True)

__all__ = [
    "AAMSoftmax",
    "DINOHead",
    "DINOLoss",
    "DinoSpeechConfig",
    "DinoSpeechFeatureExtractor",
    "DinoSpeechForPreTraining",
    "DinoSpeechForXVector",
    "DinoSpeechModel",
    "DinoSpeechModelOutput",
    "DinoSpeechPreTrainedModel",
    "DinoSpeechPreTrainingOutput",
    "DinoSpeechXVectorOutput",
    "KoLeoLoss",
]
