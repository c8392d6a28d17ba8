"""A deterministic generator of short videos and questions about what happens in them.

Each video is one to three scenes of a solid background colour (a shade of one of the image
generator's colours, in the split's own hue bands), cut hard from one to the next, each with a
light shape moving across it; in most videos a word (a sign's word or a number, in the split's
fonts) appears in a white box at a whole second and stays. Every video is a function of
(split, index) alone, encoded as an MP4 so that it reaches the model through the same sampling
and frame processing as a user's upload. Its questions, by kind:

- ``scenes``: "How many scenes are there?" — answered by naming each scene's colour in turn
  and then the count ("red, then blue: 2 scenes"), which a small model can learn to do;
- ``after_cut``: "What colour appears after the cut?" (after the first or second cut where
  there are two) — the next scene's colour;
- ``text_time``: "At what second does the text appear?" — the whole second it comes in, read
  off the timestamp written before the first frame that shows it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from omniloom.eval.synthetic import (
    COLOURS,
    FONTS,
    SHAPES,
    Question,
    font_dir,
    random_text,
    shade,
)
from omniloom.media.video_out import write_mp4

SIZE = (224, 160)
FPS = 5
SCENE_SECONDS = (2, 3)
_SPLIT_SEEDS = {"train": 7_000_003, "val": 8_000_009, "test": 9_000_011}
_ORDINALS = ("first", "second")


@dataclass(frozen=True)
class VideoScene:
    colour: str
    rgb: tuple[int, int, int]
    seconds: int
    shape: str


@dataclass(frozen=True)
class VideoSample:
    split: str
    index: int
    data: bytes  # the MP4
    scenes: tuple[VideoScene, ...]
    text: tuple[str, int] | None  # (word, the second it appears)
    questions: tuple[Question, ...]

    @property
    def seconds(self) -> int:
        return sum(scene.seconds for scene in self.scenes)


def _scenes(split: str, rng: random.Random) -> list[VideoScene]:
    count = rng.choice((1, 2, 2, 3, 3))
    colours = [rng.choice(COLOURS)]
    while len(colours) < count:
        colours.append(rng.choice([c for c in COLOURS if c != colours[-1]]))
    return [
        VideoScene(c, shade(c, split, rng), rng.choice(SCENE_SECONDS), rng.choice(SHAPES))
        for c in colours
    ]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = (235, 235, 235)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)


def _frames(scenes: list[VideoScene], text, font) -> list[Image.Image]:
    frames, t = [], 0
    for scene in scenes:
        count = scene.seconds * FPS
        for k in range(count):
            image = Image.new("RGB", SIZE, scene.rgb)
            draw = ImageDraw.Draw(image)
            _draw_shape(draw, scene.shape, 30 + (SIZE[0] - 60) * k / count, 50, 18)
            if text and t >= text[1] * FPS:
                box = draw.textbbox((0, 0), text[0], font=font)
                x, y = (SIZE[0] - box[2]) / 2, 100
                draw.rectangle(
                    (x - 6, y + box[1] - 4, x + box[2] + 6, y + box[3] + 4), fill="white"
                )
                draw.text((x, y), text[0], font=font, fill=(15, 15, 15))
            frames.append(image)
            t += 1
    return frames


def _questions(scenes: list[VideoScene], text, rng: random.Random) -> list[Question]:
    names = [scene.colour for scene in scenes]
    listed = ", then ".join(names)
    noun = "scene" if len(scenes) == 1 else "scenes"
    qs = [
        Question(
            "scenes",
            "How many scenes are there?",
            str(len(scenes)),
            f"{listed}: {len(scenes)} {noun}.",
        )
    ]
    if len(scenes) >= 2:
        cut = rng.randrange(len(scenes) - 1)
        which = "the cut" if len(scenes) == 2 else f"the {_ORDINALS[cut]} cut"
        colour = names[cut + 1]
        question = f"What colour appears after {which}?"
        qs.append(Question("after_cut", question, colour, f"{colour.capitalize()}."))
    if text:
        second = str(text[1])
        question = "At what second does the text appear?"
        qs.append(Question("text_time", question, second, f"At {second} s."))
    return qs


def make_video_sample(split: str, index: int) -> VideoSample:
    """The ``index``-th video of ``split`` (train | val | test); always the same."""
    rng = random.Random(_SPLIT_SEEDS[split] * 1_000_003 + index)
    scenes = _scenes(split, rng)
    total = sum(scene.seconds for scene in scenes)
    text = (random_text(rng), rng.randint(1, total - 1)) if rng.random() < 0.7 else None
    font = ImageFont.truetype(str(font_dir() / rng.choice(FONTS[split])), 22)
    data = write_mp4(_frames(scenes, text, font), SIZE, FPS, gop=FPS)
    questions = _questions(scenes, text, rng)
    return VideoSample(split, index, data, tuple(scenes), text, tuple(questions))
