"""SSPS: the memory queue of teacher embeddings and the pseudo-positives drawn from it."""

import pytest
import torch
import torch.nn.functional as F

from modeling_dino_speech.training.config import DinoConfig
from modeling_dino_speech.training.ssps import PositiveQueue
from modeling_dino_speech.utils.checks import SettingError


def test_the_queue_overwrites_its_oldest_entries_first():
    queue = PositiveQueue(size=4, dim=2, neighbors=1)
    queue.push(torch.ones(3, 2), torch.tensor([0, 1, 2]))
    queue.push(2 * torch.ones(3, 2), torch.tensor([3, 4, 5]))
    # slots 0..2 got utterances 0..2, then 3 went to slot 3 and 4, 5 overwrote the two oldest (0, 1)
    assert queue.utterance.tolist() == [4, 5, 2, 3]
    assert queue.embeddings[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0]
    assert int(queue.pointer) == 2
    # a batch bigger than the queue keeps its last entries
    queue.push(torch.arange(12.0).reshape(6, 2), torch.arange(10, 16))
    assert sorted(queue.utterance.tolist()) == [12, 13, 14, 15]


def test_the_pseudo_positive_is_the_nearest_entry_of_another_utterance():
    queue = PositiveQueue(size=8, dim=2, neighbors=1)
    angles = torch.tensor([0.0, 0.1, 1.5, 3.0])
    bank = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [5.0], [2.0], [3.0]])
    queue.push(bank, torch.tensor([7, 8, 9, 10]))
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.05]])
    positives, found, cosine = queue.sample(query, torch.tensor([7, 8, 1]))
    assert found.all()
    # utterance 7's own entry is excluded: its nearest other one is 8 (angle 0.1), stored at its own scale
    torch.testing.assert_close(positives[0], bank[1])
    torch.testing.assert_close(positives[1], bank[0])
    torch.testing.assert_close(positives[2], bank[3])
    torch.testing.assert_close(cosine[0], torch.cos(torch.tensor(0.1)))
    assert cosine[2] == pytest.approx(F.cosine_similarity(query[2:], bank[3:4]).item(), abs=1e-6)


def test_the_draw_is_among_the_k_nearest_and_follows_the_generator():
    torch.manual_seed(0)
    queue = PositiveQueue(size=64, dim=8, neighbors=3)
    bank = torch.randn(64, 8)
    queue.push(bank, torch.arange(64))
    query = torch.randn(200, 8)
    own = torch.randint(64, (200,))
    draw = lambda seed: queue.sample(query, own, torch.Generator().manual_seed(seed))[0]
    positives = draw(1)
    similarity = F.normalize(query, dim=-1) @ F.normalize(bank, dim=-1).T
    similarity[torch.arange(200), own] = -2
    nearest = similarity.topk(3, dim=-1).indices
    chosen = (positives[:, None, :] == bank[None, :, :]).all(-1).float().argmax(-1)
    assert (chosen[:, None] == nearest).any(-1).all()
    assert not (chosen == own).any()
    assert len(set(((chosen[:, None] == nearest).float().argmax(-1)).tolist())) == 3, "all three ranks are drawn"
    assert torch.equal(draw(1), positives) and not torch.equal(draw(2), positives)


def test_no_pseudo_positive_until_the_queue_holds_enough_other_utterances():
    queue = PositiveQueue(size=8, dim=2, neighbors=2)
    positives, found, cosine = queue.sample(torch.ones(2, 2), torch.tensor([0, 1]))
    assert not found.any() and torch.equal(positives, torch.zeros(2, 2)) and torch.equal(cosine, torch.zeros(2))
    queue.push(torch.ones(2, 2), torch.tensor([0, 1]))
    _, found, _ = queue.sample(torch.ones(2, 2), torch.tensor([0, 5]))
    # utterance 0 has one other entry (1), utterance 5 has two
    assert found.tolist() == [False, True]


def test_the_queue_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="exceeds the queue size"):
        PositiveQueue(size=2, dim=4, neighbors=3)
    queue = PositiveQueue(size=4, dim=4, neighbors=1)
    with pytest.raises(ValueError, match=r"expected \(N, 4\)"):
        queue.push(torch.ones(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="2 embeddings but 3 utterances"):
        queue.push(torch.ones(2, 4), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"ssps_weight": 1.5}, "ssps_weight"),
        ({"ssps_start_fraction": 1.0}, "ssps_start_fraction"),
        ({"ssps_queue_size": 0}, "ssps_queue_size"),
        ({"ssps_queue_size": 4, "ssps_neighbors": 5}, "at most ssps_queue_size=4"),
    ],
)
def test_ssps_settings_are_checked(settings, message):
    with pytest.raises(SettingError, match=message):
        DinoConfig(**settings)
