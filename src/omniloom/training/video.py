"""The ``video`` stage's data: conversations about synthetic videos, through the serving path.

Each video (``eval/synthetic_video.py``) is sampled as the server samples a request's video
with its default settings (uniform, one frame a second, low detail) and laid out by the
model's own video processor — header, ``At 2.0 s:`` before each frame, each frame one image
span — so the adapter learns from exactly what the server will feed it. Every video's
questions are one conversation in shuffled order, each answered by its reply (the scene count
after naming the scenes' colours). A ``REHEARSAL`` share of still images with their usual
questions rides along, so the image skills of the earlier stages are kept.

Frames and images go through the frozen encoder once; examples point at their rows.
"""

from __future__ import annotations

import dataclasses
import random

import torch

from omniloom.config import ImageSettings, Limits, VideoSettings
from omniloom.eval.synthetic import make_sample
from omniloom.eval.synthetic_video import VideoSample, make_video_sample
from omniloom.media import video
from omniloom.models.registry import LoadedModel
from omniloom.models.specs.omniloom_smol import TiledImageProcessor
from omniloom.processing.prompt import MediaPart
from omniloom.processing.video_frames import FramesAsImages
from omniloom.training.data import Example, build_examples, conversation, encode_items, image_item

REHEARSAL = 0.25  # still images per video


def video_parts(model: LoadedModel, sample: VideoSample, settings: VideoSettings) -> list:
    """The video's prompt parts as a chat request with ``settings`` gets them."""
    info, frames = video.sample(sample.data, settings, Limits())
    digest = video.video_hash(sample.data)
    processor = FramesAsImages(TiledImageProcessor(model.vlm))  # the adapter may be untrained
    return processor.parts(info, frames, digest, settings.detail, ImageSettings())


def video_examples(
    model: LoadedModel, split: str, first: int, count: int, seed: int
) -> tuple[list[Example], torch.Tensor]:
    """Conversations about videos ``first`` .. ``first + count`` of ``split`` (and about a
    ``REHEARSAL`` share of still images from the same index range), with the encoder
    features their examples point at."""
    rng = random.Random(seed)
    settings = VideoSettings()
    examples, items = [], []
    for index in range(first, first + count):
        sample = make_video_sample(split, index)
        parts = video_parts(model, sample, settings)
        frames = [part.item for part in parts if isinstance(part, MediaPart)]
        rows = tuple(range(len(items), len(items) + len(frames)))
        items += frames
        turns = [(q.question, q.reply) for q in sample.questions]
        rng.shuffle(turns)
        examples.append(conversation(model, parts, turns, rows, rng.random() < 0.8))
    stills = [make_sample(split, first + i) for i in range(round(count * REHEARSAL))]
    offset = len(items)
    for example in build_examples(stills, model, "instruct", seed=seed):
        shifted = tuple(row + offset for row in example.images)
        examples.append(dataclasses.replace(example, images=shifted))
    items += [image_item(still, model) for still in stills]
    return examples, encode_items(items, model)
