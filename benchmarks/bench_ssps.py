"""Benchmark: what SSPS (`dino.ssps_weight` > 0) adds to a DINO step, against the DINO loss it doubles.

Per step SSPS draws a pseudo-positive for every teacher view from its memory queue (`PositiveQueue.sample`:
one (V_t * B) x Q cosine product and a top-k), runs the teacher's DINO head on those embeddings, computes a
second DINO loss against them, and pushes the views into the queue. This times those pieces, round-robin,
against the baseline in the same run: the plain DINO loss on the same student logits. Sizes come from the
recipe YAMLs (embedding size, prototypes, crops); the batch and the queue size are options. Random tensors:
the encoder's forward and backward, which dominate a step, are `bench_train_step.py`'s subject.

Usage (about a minute on 2 shared cores):
    .venv/bin/python benchmarks/bench_ssps.py
    .venv/bin/python benchmarks/bench_ssps.py --device cuda --paper-batch 96
"""

from __future__ import annotations

import argparse

import torch
from _harness import ROOT, interleaved, machine_line, table

RECIPES = {"demo": ROOT / "configs" / "demo.yaml", "paper": ROOT / "configs" / "paper_lresnet34.yaml"}


def measure(recipe: str, batch: int, queue_size: int, rounds: int, device: str) -> list:
    from modeling_dino_speech import DinoSpeechConfig
    from modeling_dino_speech.dino_head import DINOHead
    from modeling_dino_speech.losses import DINOLoss
    from modeling_dino_speech.training.config import DinoTrainConfig, load_config
    from modeling_dino_speech.training.ssps import PositiveQueue, pseudo_positive_logits

    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = load_config(DinoTrainConfig, RECIPES[recipe])
    config = DinoSpeechConfig(**cfg.model)
    crops, k, d = cfg.data.crops, config.dino_num_prototypes, config.embedding_size
    views = crops.n_global + crops.n_local
    head = DINOHead(d, k, config.dino_hidden_size, config.dino_bottleneck_size).to(dev).eval()
    loss = DINOLoss(k, crops.n_global).to(dev)
    queue = PositiveQueue(queue_size, d, cfg.dino.ssps_neighbors).to(dev)
    queue.push(torch.randn(queue_size, d, device=dev), torch.arange(queue_size, device=dev))
    student = torch.randn(views * batch, k, device=dev)
    teacher = torch.randn(crops.n_global * batch, k, device=dev)
    embeddings = torch.randn(crops.n_global * batch, d, device=dev)
    utterance = torch.randint(queue_size, (batch,), device=dev).repeat(crops.n_global)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)

    def ssps_extra() -> None:
        logits, _ = pseudo_positive_logits(queue, head, teacher, embeddings, utterance, generator)
        loss(student, logits, 0.04)
        queue.push(embeddings, utterance)

    times = interleaved(
        {
            "DINO loss (baseline)": lambda: loss(student, teacher, 0.04),
            "sample": lambda: queue.sample(embeddings, utterance, generator),
            "SSPS, all it adds": ssps_extra,
        },
        rounds=rounds,
        warmup=2,
        sync=sync,
    )
    base = times["DINO loss (baseline)"]
    return [
        [recipe, batch, queue_size, k, name, f"{1e3 * seconds:.2f}", f"{seconds / base:.2f}x"]
        for name, seconds in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-batch", type=int, default=32)
    parser.add_argument("--paper-batch", type=int, default=96)
    parser.add_argument("--queues", type=int, nargs="+", default=[8192, 65536])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("bench_ssps: what SSPS adds to a DINO step, against the DINO loss (median ms per step, random tensors)")
    print(machine_line(args.threads))
    rows = []
    for recipe, batch in (("demo", args.demo_batch), ("paper", args.paper_batch)):
        for size in args.queues:
            rows += measure(recipe, batch, size, args.rounds, args.device)
    print(table(["recipe", "batch", "queue", "prototypes", "what", "ms", "vs DINO loss"], rows))


if __name__ == "__main__":
    main()
