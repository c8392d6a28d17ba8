"""The LLaVA recipe on the CPU, after a grounding stage, resumable, with a loss curve.

Stage ``ground`` fits the projector alone to per-cell word embeddings (``grounding.py``; no LLM
step). Stage ``align`` trains the projector and the media-token embeddings on captions with the LLM
frozen; stage ``instruct`` adds LoRA adapters on every attention and MLP projection and trains
on multi-turn question–answer conversations about each image — a quarter of the images with the
perception cascade's words beside them, as the server's default ``hybrid`` mode sends them — plus
conversations that see an image only through those words (the adapter runs for those prompts
too). Stage ``place`` goes on with new images whose conversations ask where every pair of
objects stands beside all their other questions: in ``instruct`` position answers are too few
for the LLM to learn to read where things are. Stage ``position`` ends at a lower rate on new
images, each asked only where its one pair of objects stands (both orders), a quarter of them
also asked their other questions so the rest is rehearsed. Stage ``video`` goes on with
conversations about synthetic videos — how many scenes, what colour comes after a cut, when text
appears — sampled and laid out as the server does (``video.py``), with still images rehearsed
beside them. Only answer tokens carry loss. Steps
run their matmuls in bfloat16 (``Recipe.precision``, CPU autocast); weights stay float32.
A checkpoint is written every ``checkpoint_every`` steps and at each stage's end; running
again resumes from it; ``start_stage`` starts a run at a later stage from an installed adapter
(the result of the stages before it). The adapter file also carries the familiarity bank: the
encoder's pooled features of the ``instruct`` stage's first ``BANK_IMAGES`` images
(``models/familiarity.py``).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from omniloom.eval.synthetic import Sample, make_sample, make_split
from omniloom.models.adapter import (
    adapter_state,
    apply_adapter_state,
    read_adapter,
    write_adapter,
)
from omniloom.models.familiarity import build_bank
from omniloom.models.lora import attach_lora
from omniloom.models.multimodal import splice_media
from omniloom.models.registry import LoadedModel
from omniloom.models.specs.omniloom_smol import use_tile_layout
from omniloom.perception.cascade import Perception, PerceptionCascade
from omniloom.perception.ocr import OcrEngine
from omniloom.training.data import (
    Example,
    build_examples,
    encode_samples,
    perception_examples,
)
from omniloom.training.grounding import grounding_loss, grounding_targets
from omniloom.training.video import video_examples

BANK_IMAGES = 512
PRECISIONS = ("bfloat16", "float32")


@dataclass(frozen=True)
class Stage:
    name: str
    task: str  # ground (projector, no LLM) | align | instruct | place | position | video
    images: int  # (video: videos)
    steps: int
    lr: float
    lora: bool
    batch_size: int = 0  # 0: the recipe's
    perception: int = 0  # extra conversations that see the image only as the cascade's words
    hybrid: int = 0  # images whose conversations carry the cascade's words beside the image


@dataclass(frozen=True)
class Recipe:
    stages: tuple[Stage, ...] = (
        Stage("ground", "ground", images=1200, steps=400, lr=2e-3, lora=False, batch_size=32),
        Stage("align", "align", images=1200, steps=100, lr=2e-3, lora=False),
        Stage(
            "instruct", "instruct", 1600, steps=380, lr=1e-3, lora=True, perception=160, hybrid=400
        ),
        Stage("place", "place", images=1600, steps=200, lr=5e-4, lora=True),
        Stage("position", "position", images=3200, steps=200, lr=3e-4, lora=True),
        Stage("video", "video", images=1200, steps=240, lr=5e-4, lora=True),
    )
    batch_size: int = 8
    layout: str = "raster"  # the tile layout the adapter learns (and then serves with)
    val_images: int = 120
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    seed: int = 0
    checkpoint_every: int = 50
    precision: str = "bfloat16"  # of the steps' matmuls (CPU autocast); weights stay float32


QUICK_RECIPE = Recipe(
    stages=(
        Stage("ground", "ground", 16, 6, 2e-3, False),
        Stage("align", "align", 16, 6, 2e-3, False),
        Stage("instruct", "instruct", 16, 6, 1e-3, True, perception=4, hybrid=4),
        Stage("place", "place", 16, 4, 5e-4, True),
        Stage("position", "position", 16, 4, 3e-4, True),
        Stage("video", "video", 8, 4, 3e-4, True),
    ),
    batch_size=4,
    val_images=8,
    checkpoint_every=4,
)


@dataclass
class Progress:
    stage: int = 0
    step: int = 0
    losses: list[list[float]] = field(default_factory=list)  # per stage
    val_loss: dict[str, float] = field(default_factory=dict)


def batch_loss(model: LoadedModel, examples: list[Example], features: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over answer tokens of a right-padded batch (padding never attends back)."""
    vlm = model.vlm
    length = max(len(e.ids) for e in examples)
    pad = model.tokenizer.eos_id
    ids = torch.tensor([e.ids + [pad] * (length - len(e.ids)) for e in examples])
    embeds = vlm.embed_ids(ids.flatten()).view(len(examples), length, -1)
    projected = vlm.project(features[[row for e in examples for row in e.images]])
    media = [projected.reshape(-1, projected.shape[-1])]  # every tile's cells, in order
    embeds = splice_media(embeds, vlm.placeholder_mask(ids), media)
    hidden = vlm.backbone.hidden_states(embeds)
    rows, cols, targets = [], [], []
    for b, e in enumerate(examples):
        for start, end in e.answer_spans:
            rows += [b] * (end - start)
            cols += range(start - 1, end - 1)
            targets += e.ids[start:end]
    logits = vlm.backbone.lm_head(hidden[rows, cols]).float()
    return F.cross_entropy(logits, torch.tensor(targets))


@torch.no_grad()
def mean_loss(
    model: LoadedModel, examples: list[Example], features: torch.Tensor, batch: int = 8
) -> float:
    """Answer-token loss averaged over ``examples`` (validation)."""
    total = 0.0
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        total += float(batch_loss(model, chunk, features)) * len(chunk)
    return total / len(examples)


@dataclass
class ConversationTask:
    """Answer-token cross-entropy on conversations about the images (align and instruct)."""

    model: LoadedModel
    examples: list[Example]
    features: torch.Tensor

    def lengths(self) -> list[int]:
        return [len(e.ids) for e in self.examples]

    def loss(self, indices: list[int]) -> torch.Tensor:
        return batch_loss(self.model, [self.examples[i] for i in indices], self.features)

    def mean_loss(self, batch: int) -> float:
        return mean_loss(self.model, self.examples, self.features, batch)


@dataclass
class GroundingTask:
    """Projected image tokens against the word embeddings of what each cell shows."""

    model: LoadedModel
    features: torch.Tensor
    targets: torch.Tensor

    def lengths(self) -> list[int]:
        return [1] * len(self.features)

    def loss(self, indices: list[int]) -> torch.Tensor:
        return grounding_loss(self.model, self.features[indices], self.targets[indices])

    @torch.no_grad()
    def mean_loss(self, batch: int) -> float:
        return float(grounding_loss(self.model, self.features, self.targets))


def step_precision(precision: str):
    """The context a step runs in: ``bfloat16`` autocasts its matmuls (2.4x faster than float32
    on a CPU with native bf16, as AVX512-BF16 and AMX have), ``float32`` runs them as they are.
    Either way the trained weights, the optimizer and the loss stay float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown training precision {precision!r}; choose from {PRECISIONS}")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _lr(stage: Stage, step: int) -> float:
    warmup = max(1, stage.steps // 20)
    if step < warmup:
        return stage.lr * (step + 1) / warmup
    return stage.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, stage.steps - warmup)))


class Trainer:
    def __init__(
        self, model: LoadedModel, recipe: Recipe, out_dir: Path, progress_bar: bool = True
    ):
        self.model, self.recipe, self.out = model, recipe, Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress_bar = progress_bar
        self.state = Progress()
        self._cascade: PerceptionCascade | None = None
        vlm = model.vlm
        use_tile_layout(vlm, recipe.layout, model.tokenizer)
        for p in vlm.parameters():
            p.requires_grad_(False)
        torch.manual_seed(recipe.seed)
        attach_lora(vlm.backbone, recipe.lora_targets, recipe.lora_rank, recipe.lora_alpha)

    def trainable(self, stage: Stage) -> list[torch.nn.Parameter]:
        vlm = self.model.vlm
        params = [*vlm.projector.parameters(), vlm.media_embed.weight]
        if stage.lora:
            params += [p for n, p in vlm.backbone.named_parameters() if ".lora_" in n]
        return params

    def start_stage(self, name: str, adapter: Path) -> None:
        """Begin at stage ``name`` with the weights of ``adapter`` (the stages before it),
        unless this run's directory already has a checkpoint to resume."""
        if (self.out / "checkpoint.pt").exists():
            return
        names = [stage.name for stage in self.recipe.stages]
        if name not in names:
            raise ValueError(f"no stage {name!r} in the recipe; its stages: {', '.join(names)}")
        state, metadata = read_adapter(adapter)
        first = names.index(name)
        earlier = json.loads(metadata.get("val_loss", "{}"))  # the earlier stages' results
        if done := [stage for stage in names[first:] if stage in earlier]:
            raise ValueError(
                f"{adapter} already went through stage {done[0]!r}; start from an adapter of "
                f"the stages before {name!r} only"
            )
        apply_adapter_state(self.model.vlm, state)
        self.state = Progress(stage=first, losses=[[] for _ in names[:first]], val_loss=earlier)

    def run(self) -> Progress:
        self._resume()
        val = make_split("val", self.recipe.val_images)
        val_feats = encode_samples(val, self.model)
        for index in range(self.state.stage, len(self.recipe.stages)):
            stage = self.recipe.stages[index]
            self._run_stage(index, stage)
            if stage.task == "video":
                val_task = self._video_task("val", 0, self.recipe.val_images // 4, seed=1)
            else:
                val_task = self._task(stage, val, val_feats, seed=1)
            with step_precision(self.recipe.precision):
                self.state.val_loss[stage.name] = val_task.mean_loss(self.recipe.batch_size)
            self.state.stage, self.state.step = index + 1, 0
            self._checkpoint(None)
        self.save_adapter(self.out / "adapter.safetensors")
        self.plot_losses(self.out / "loss.png")
        return self.state

    def _task(self, stage: Stage, samples: list[Sample], features: torch.Tensor, seed: int):
        if stage.task == "ground":
            return GroundingTask(self.model, features, grounding_targets(samples, self.model))
        share = len(samples) / stage.images  # val gets as many per image as training
        described = self._described(samples, round(stage.hybrid * share), seed)
        examples = build_examples(samples, self.model, stage.task, seed=seed, described=described)
        examples += perception_examples(self.model, int(stage.perception * share), seed=seed)
        return ConversationTask(self.model, examples, features)

    def _described(self, samples: list[Sample], count: int, seed: int) -> dict[int, Perception]:
        """What the real cascade (OCR and labels) reads from ``count`` of the images, by row."""
        if count == 0:
            return {}
        if self._cascade is None:
            self._cascade = PerceptionCascade(self.model.vlm.encoder, OcrEngine())
        rows = sorted(random.Random(seed).sample(range(len(samples)), count))
        bar = tqdm(rows, desc="cascade", disable=not self.progress_bar)
        return {row: self._cascade.describe(samples[row].image) for row in bar}

    def _video_task(self, split: str, first: int, count: int, seed: int):
        examples, features = video_examples(self.model, split, first, count, seed)
        return ConversationTask(self.model, examples, features)

    def _stage_task(self, index: int, stage: Stage):
        seed = self.recipe.seed + index
        if stage.task == "video":
            return self._video_task("train", index * 100_000, stage.images, seed)
        samples = _train_samples(index, stage.images)
        return self._task(stage, samples, encode_samples(samples, self.model), seed)

    def _run_stage(self, index: int, stage: Stage) -> None:
        task = self._stage_task(index, stage)
        params = self.trainable(stage)
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0)
        self._load_optimizer(optimizer, index)
        while len(self.state.losses) <= index:
            self.state.losses.append([])
        rng = random.Random(self.recipe.seed * 7919 + index)
        batch_size = stage.batch_size or self.recipe.batch_size
        order = _epoch_order(task.lengths(), batch_size, stage.steps, rng)
        bar = tqdm(
            total=stage.steps,
            initial=self.state.step,
            desc=stage.name,
            disable=not self.progress_bar,
        )
        while self.state.step < stage.steps:
            for group in optimizer.param_groups:
                group["lr"] = _lr(stage, self.state.step)
            with step_precision(self.recipe.precision):
                loss = task.loss(order[self.state.step])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            self.state.losses[index].append(loss.item())
            self.state.step += 1
            bar.set_postfix(loss=f"{self.state.losses[index][-1]:.3f}")
            bar.update(1)
            if self.state.step % self.recipe.checkpoint_every == 0:
                self._checkpoint(optimizer)
        bar.close()
        for p in params:
            p.requires_grad_(False)

    def save_adapter(self, path: Path) -> None:
        meta = {
            "recipe": json.dumps(asdict(self.recipe)),
            "val_loss": json.dumps(self.state.val_loss),
        }
        bank = familiarity_bank(self.model.vlm.encoder, self.recipe)
        write_adapter(path, self.model.vlm, meta, bank)

    def _checkpoint(self, optimizer) -> None:
        torch.save(
            {
                "progress": asdict(self.state),
                "weights": adapter_state(self.model.vlm),
                "optimizer": optimizer.state_dict() if optimizer else None,
                "recipe": asdict(self.recipe),
            },
            self.out / "checkpoint.pt",
        )
        self.plot_losses(self.out / "loss.png")

    def _resume(self) -> None:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return
        ckpt = torch.load(path, weights_only=False)
        if ckpt["recipe"] != asdict(self.recipe):
            raise ValueError(f"{path} was written by a different recipe; use another --out")
        self.state = Progress(**ckpt["progress"])
        apply_adapter_state(self.model.vlm, ckpt["weights"])
        self._pending_optimizer = ckpt["optimizer"]

    def _load_optimizer(self, optimizer, index: int) -> None:
        pending = getattr(self, "_pending_optimizer", None)
        if pending is not None and self.state.stage == index and self.state.step > 0:
            optimizer.load_state_dict(pending)
        self._pending_optimizer = None

    def plot_losses(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        offset = 0
        for stage, losses in zip(self.recipe.stages, self.state.losses, strict=False):
            ax.plot(range(offset, offset + len(losses)), losses, label=stage.name)
            offset += len(losses)
        ax.set_xlabel("step")
        ax.set_ylabel("loss\n(ground: relative squared error,\nelse answer cross-entropy)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(
            "val loss: " + ", ".join(f"{k} {v:.3f}" for k, v in self.state.val_loss.items())
        )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def familiarity_bank(encoder, recipe: Recipe) -> torch.Tensor:
    """Pooled encoder features of the images the adapter learned to answer every question about:
    the first ``BANK_IMAGES`` of its last ``instruct`` stage."""
    index = bank_stage(recipe)
    count = min(BANK_IMAGES, recipe.stages[index].images)
    return build_bank(encoder, [s.image for s in _train_samples(index, count)])


def bank_stage(recipe: Recipe) -> int:
    """Index of the recipe's last ``instruct`` stage, whose images the bank holds."""
    return max(i for i, stage in enumerate(recipe.stages) if stage.task == "instruct")


def _train_samples(stage_index: int, count: int) -> list[Sample]:
    """Each stage draws its own images: stage k uses train indices from k·100000."""
    return [make_sample("train", stage_index * 100_000 + i) for i in range(count)]


def _epoch_order(
    lengths: list[int], batch: int, steps: int, rng: random.Random, pool: int = 16
) -> list[list[int]]:
    """Batches of example indices for ``steps`` steps, reshuffling at each pass. Within each
    window of ``pool`` batches, examples are sorted by length so little compute goes to padding;
    the batches themselves are then shuffled."""
    batches: list[list[int]] = []
    while len(batches) < steps:
        perm = list(range(len(lengths)))
        rng.shuffle(perm)
        for w in range(0, len(perm), batch * pool):
            window = sorted(perm[w : w + batch * pool], key=lengths.__getitem__)
            chunk = [window[i : i + batch] for i in range(0, len(window), batch)]
            rng.shuffle(chunk)
            batches += chunk
    return batches[:steps]
