import os

import pytest
import torch

# Two cores are shared by the data workers and the model: more intra-op threads only fight over them.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_config():
    from modeling_dino_speech import DinoSpeechConfig

    return DinoSpeechConfig(
        resnet_layers=[1, 1, 1, 1],
        resnet_base_width=8,
        embedding_size=32,
        dino_hidden_size=64,
        dino_bottleneck_size=16,
        dino_num_prototypes=128,
        num_mel_bins=80,
    )
