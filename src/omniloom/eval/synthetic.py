"""A deterministic generator of image–text data: shapes, colours, counts, sizes, positions, text.

Every sample is a function of (split, index) alone. The test split uses its own seeds, its own
fonts and its own colour shades (hue bands interleaved with the training ones inside each
colour family), so a model that scores on it has learned the concepts rather than memorised
pixels. Each sample carries a caption (alignment), question–answer pairs by type
(instruction tuning and VQA), and yes/no questions asked both ways on each image: where two
things stand, in both orders, and one present and one absent object (POPE).
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = 224
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
_FAMILIES = {  # hue range in degrees, saturation range, value range per colour name
    "red": ((-12.0, 10.0), (0.65, 1.0), (0.55, 0.95)),
    "green": ((95.0, 145.0), (0.55, 1.0), (0.45, 0.85)),
    "blue": ((205.0, 235.0), (0.55, 1.0), (0.55, 0.95)),
    "yellow": ((46.0, 58.0), (0.7, 1.0), (0.85, 1.0)),
}
HUE_BAND = 2.0  # degrees: train/validation shades use even bands, test shades the odd ones
_SPLIT_SEEDS = {"train": 1_000_003, "val": 2_000_003, "test": 3_000_017}
_WORDS = (
    "open",
    "exit",
    "stop",
    "sale",
    "cafe",
    "hotel",
    "bank",
    "park",
    "taxi",
    "menu",
    "push",
    "pull",
    "north",
    "south",
    "water",
    "fresh",
    "bread",
    "books",
    "music",
    "train",
)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"


FONTS = {
    "train": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf"),
    "val": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf"),
    "test": ("DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf"),
}


@dataclass(frozen=True)
class Question:
    kind: str  # shape | colour | count | size | position | exists | ocr
    question: str
    answer: str  # what scoring compares
    reply: str = ""  # the full reply training teaches, where it reasons before the answer


@dataclass(frozen=True)
class Region:
    """Where one object or text sits (pixel box) and the words that name it (grounding)."""

    box: tuple[float, float, float, float]
    words: tuple[str, ...]


@dataclass
class Sample:
    split: str
    index: int
    image: Image.Image
    caption: str
    questions: list[Question] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    things: list[Thing] = field(default_factory=list)  # a shape scene's objects


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    large: bool
    cell: tuple[int, int]  # (column, row) in a 3×3 grid

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def shade(colour: str, split: str, rng: random.Random) -> tuple[int, int, int]:
    """A shade of ``colour``: its hue falls in an even band for train/val, an odd one for test."""
    (lo, hi), sat, val = _FAMILIES[colour]
    band = rng.randrange(int((hi - lo) / HUE_BAND) // 2) * 2 + (split == "test")
    hue = (lo + (band + rng.random()) * HUE_BAND) % 360
    rgb = colorsys.hsv_to_rgb(hue / 360, rng.uniform(*sat), rng.uniform(*val))
    return tuple(round(255 * c) for c in rgb)


def _draw_thing(draw: ImageDraw.ImageDraw, thing: Thing, fill, rng: random.Random) -> Region:
    cell = SIZE // 3
    radius = (cell * (0.42 if thing.large else 0.24)) + rng.uniform(-2, 2)
    cx = thing.cell[0] * cell + cell / 2 + rng.uniform(-4, 4)
    cy = thing.cell[1] * cell + cell / 2 + rng.uniform(-4, 4)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if thing.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif thing.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon(
            [(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=fill
        )
    size = "large" if thing.large else "small"
    return Region(box, (size, thing.colour, thing.shape, *_where(thing.cell).split()))


def _scene_things(rng: random.Random) -> list[Thing]:
    count = rng.choice((1, 1, 2, 2, 3, 4))
    cells = rng.sample([(c, r) for c in range(3) for r in range(3)], count)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], count)
    return [
        Thing(s, c, rng.random() < 0.5, cell) for (s, c), cell in zip(kinds, cells, strict=True)
    ]


def _where(cell: tuple[int, int]) -> str:
    col = ("left", "middle", "right")[cell[0]]
    row = ("top", "middle", "bottom")[cell[1]]
    return "centre" if (row, col) == ("middle", "middle") else f"{row} {col}".replace("middle ", "")


def _caption(things: list[Thing]) -> str:
    parts = [
        f"a {'large' if t.large else 'small'} {t.name} at the {_where(t.cell)}" for t in things
    ]
    return "There is " + ", ".join(parts) + "."


def _unique(things: list[Thing], attr: str) -> list[Thing]:
    """Things whose ``attr`` (shape or colour) no other thing in the scene shares."""
    values = [getattr(t, attr) for t in things]
    return [t for t in things if values.count(getattr(t, attr)) == 1]


def _shape_questions(things: list[Thing], rng: random.Random) -> list[Question]:
    qs = [Question("count", "How many shapes are there?", str(len(things)))]
    if by_shape := _unique(things, "shape"):
        t = rng.choice(by_shape)
        qs.append(Question("colour", f"What colour is the {t.shape}?", t.colour))
    if by_colour := _unique(things, "colour"):
        t = rng.choice(by_colour)
        qs.append(Question("shape", f"What shape is the {t.colour} object?", t.shape))
    t = rng.choice(things)
    qs.append(Question("size", f"Is the {t.name} large or small?", "large" if t.large else "small"))
    if len(things) >= 2:
        a, b = rng.sample(things, 2)
        qs += [_position(a, b), _position(b, a)]
    return qs + _existence(things, rng)


_COLUMNS = ("on the left", "in the middle", "on the right")
_ROWS = ("at the top", "in the middle", "at the bottom")


def _position(a: Thing, b: Thing) -> Question:
    """Left of when the columns differ, else above. The reply places each thing first and
    answers last: a 135M model that must say yes or no at once stays at chance."""
    axis, places, relation = (
        (0, _COLUMNS, "left of") if a.cell[0] != b.cell[0] else (1, _ROWS, "above")
    )
    answer = "yes" if a.cell[axis] < b.cell[axis] else "no"
    where_a, where_b = places[a.cell[axis]], places[b.cell[axis]]
    reply = f"The {a.name} is {where_a} and the {b.name} is {where_b}, so {answer}."
    return Question("position", f"Is the {a.name} {relation} the {b.name}?", answer, reply)


def every_position_question(things: list[Thing]) -> list[Question]:
    """The position question of every ordered pair of things (training asks more than the
    generator's one pair each way)."""
    return [_position(a, b) for a, b in permutations(things, 2)]


def _existence(things: list[Thing], rng: random.Random) -> list[Question]:
    """One present and one absent object, in random order: every image asks both ways."""
    present = {t.name for t in things}
    absent = sorted({f"{c} {s}" for s in SHAPES for c in COLOURS} - present)
    pair = [(rng.choice(sorted(present)), "yes"), (rng.choice(absent), "no")]
    rng.shuffle(pair)
    return [Question("exists", f"Is there a {name} in the image?", yes) for name, yes in pair]


def _shape_sample(split: str, index: int, rng: random.Random) -> Sample:
    grey = rng.randint(225, 250)
    image = Image.new("RGB", (SIZE, SIZE), (grey, grey, grey - rng.randint(0, 10)))
    draw = ImageDraw.Draw(image)
    things = _scene_things(rng)
    regions = [_draw_thing(draw, t, shade(t.colour, split, rng), rng) for t in things]
    questions = _shape_questions(things, rng)
    return Sample(split, index, image, _caption(things), questions, regions, things)


def random_text(rng: random.Random) -> str:
    """A word of a sign or a number, as the text samples render them."""
    return rng.choice(_WORDS) if rng.random() < 0.6 else str(rng.randint(10, 9999))


def _text_sample(split: str, index: int, rng: random.Random) -> Sample:
    text = random_text(rng)
    font = ImageFont.truetype(str(font_dir() / rng.choice(FONTS[split])), rng.randint(40, 60))
    image = Image.new("RGB", (SIZE, SIZE), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (SIZE - (right - left)) / 2 - left + rng.uniform(-10, 10)
    y = (SIZE - (bottom - top)) / 2 - top + rng.uniform(-30, 30)
    draw.text((x, y), text, font=font, fill=(20, 20, 20))
    caption = f'The image shows the text "{text}".'
    question = Question("ocr", "What does the text say?", text)
    region = Region(draw.textbbox((x, y), text, font=font), (text,))
    return Sample(split, index, image, caption, [question], [region])


def make_sample(split: str, index: int) -> Sample:
    """The ``index``-th sample of ``split`` (train | val | test); always the same."""
    rng = random.Random(_SPLIT_SEEDS[split] * 1_000_003 + index)
    if rng.random() < 0.2:
        return _text_sample(split, index, rng)
    return _shape_sample(split, index, rng)


def make_split(split: str, count: int) -> list[Sample]:
    return [make_sample(split, i) for i in range(count)]
