"""Frame sampling on generated videos: three scenes cut hard, each strategy's frames and
timestamps, the frame budget, the plan made from metadata alone, the sound track, and refusals
(over the limits from the header, corrupt and truncated files) with errors that say what is
wrong."""

from __future__ import annotations

import dataclasses

import pytest

from omniloom.config import Limits, VideoSettings
from omniloom.errors import MediaError
from omniloom.media.video import (
    adaptive_times,
    plan,
    pooled,
    sample,
    sound_chunks,
    uniform_times,
)
from tests.media.video_files import Scene, make_video

FPS = 10
CUTS = (0.0, 2.0, 4.0)  # where each of the three scenes starts
SCENES = [Scene((200, 0, 0), 2.0), Scene((0, 160, 0), 2.0, moving=False), Scene((0, 0, 200), 2.0)]


@pytest.fixture(scope="module")
def three_scenes() -> bytes:
    return make_video(SCENES, fps=FPS)


def _sample(data: bytes, limits: Limits | None = None, **options):
    return sample(data, VideoSettings(**options), limits or Limits())


def _scene_of(timestamp: float) -> int:
    return sum(timestamp >= cut for cut in CUTS) - 1


def test_header_facts(three_scenes):
    info, _ = _sample(three_scenes)
    assert (info.seconds, info.fps, info.frames, info.width, info.height) == (
        6.0,
        10.0,
        60,
        160,
        96,
    )
    assert not info.has_audio


def test_scene_change_finds_every_scene_at_its_cut(three_scenes):
    _, frames = _sample(three_scenes, strategy="scene", max_frames=8)
    assert len(frames) <= 8
    assert {_scene_of(f.timestamp) for f in frames} == {0, 1, 2}
    for cut in CUTS:
        assert min(abs(f.timestamp - cut) for f in frames) <= 1 / FPS


def test_scene_change_keeps_the_strongest_cuts_within_the_budget(three_scenes):
    _, frames = _sample(three_scenes, strategy="scene", max_frames=2)
    first, cut = (round(f.timestamp, 1) for f in frames)
    assert first == 0.0 and cut in CUTS[1:]


def test_uniform_frames_fall_on_their_times(three_scenes):
    _, frames = _sample(three_scenes, strategy="uniform", fps=2.0, max_frames=32)
    assert [f.timestamp for f in frames] == pytest.approx([k / 2 for k in range(12)], abs=1e-6)
    _, spread = _sample(three_scenes, strategy="uniform", fps=10.0, max_frames=4)
    assert [f.timestamp for f in spread] == pytest.approx([0.0, 1.5, 3.0, 4.5], abs=0.051)
    assert uniform_times(6.0, 2.0, 32) == [k / 2 for k in range(12)]


def test_keyframes_come_from_the_container(three_scenes):
    _, frames = _sample(three_scenes, strategy="keyframes", max_frames=16)
    assert [f.timestamp for f in frames] == pytest.approx([0, 1, 2, 3, 4, 5], abs=1e-6)
    _, fewer = _sample(three_scenes, strategy="keyframes", max_frames=3)
    assert [f.timestamp for f in fewer] == pytest.approx([0, 2, 5], abs=1e-6)


def test_adaptive_spends_the_budget_where_the_picture_changes(three_scenes):
    _, frames = _sample(three_scenes, strategy="adaptive", max_frames=8)
    assert len(frames) == 8
    still = [f for f in frames if _scene_of(f.timestamp) == 1]
    assert len(still) < len(frames) / 3  # the green scene does not move
    assert adaptive_times([(0.0, 1.0), (1.0, 0.0), (2.0, 0.5)], 2) == [0.0, 2.0]


def test_frames_are_scaled_to_the_side_limit():
    big = make_video([Scene((9, 9, 9), 1.0)], size=(640, 360))
    _, frames = _sample(big, max_side=128)
    assert frames[0].image.size == (128, 72)


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (dataclasses.replace(Limits(), max_video_seconds=5.0), "6.0 s long"),
        (dataclasses.replace(Limits(), max_video_pixels=100 * 96), "160×96"),
        (dataclasses.replace(Limits(), max_video_frames=50), "60 frames"),
    ],
)
def test_limits_are_enforced_from_the_header(three_scenes, limits, words):
    with pytest.raises(MediaError) as refused:
        _sample(three_scenes, limits)
    assert words in refused.value.message


def test_corrupt_truncated_and_unknown_strategy_are_refused(three_scenes):
    with pytest.raises(MediaError, match="could not be read"):
        _sample(b"\x00not a video at all" * 100)
    with pytest.raises(MediaError):
        _sample(three_scenes[: len(three_scenes) // 3])
    with pytest.raises(MediaError, match="choose from"):
        _sample(three_scenes, strategy="every-frame")


def test_pooling_merges_near_identical_consecutive_frames(three_scenes):
    _, frames = _sample(three_scenes, strategy="uniform", fps=2.0, max_frames=32)
    kept = pooled(frames, threshold=0.02)
    assert [f.timestamp for f in kept][:2] == [0.0, 0.5]  # the red scene moves
    assert {_scene_of(f.timestamp) for f in kept} == {0, 1, 2}
    still = [f for f in kept if _scene_of(f.timestamp) == 1]
    assert [f.timestamp for f in still] == [2.0]  # the green scene is one frame


def test_a_cut_between_colours_of_equal_brightness_is_seen():
    grey_red, grey_blue = (150, 60, 60), (60, 83, 170)  # luma within 2 of each other
    data = make_video([Scene(grey_red, 1.0, moving=False), Scene(grey_blue, 1.0, moving=False)])
    _, frames = _sample(data, strategy="scene", max_frames=4)
    assert [round(f.timestamp, 1) for f in frames] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("strategy", "fps", "side"),
    [("uniform", 1.0, 448), ("uniform", 3.0, 100), ("uniform", 7.0, 448), ("keyframes", 1.0, 64)],
)
def test_the_plan_gives_the_sampled_frames_without_decoding(three_scenes, strategy, fps, side):
    settings = VideoSettings(strategy=strategy, fps=fps, max_frames=12, max_side=side)
    planned = plan(three_scenes, settings, Limits())
    _, frames = sample(three_scenes, settings, Limits())
    assert planned.exact
    assert [f.timestamp for f in planned.frames] == pytest.approx([f.timestamp for f in frames])
    assert {f.image.size for f in planned.frames} == {f.image.size for f in frames}


@pytest.mark.parametrize("options", [{"strategy": "scene"}, {"pooling": True}])
def test_the_plan_bounds_what_it_cannot_know(three_scenes, options):
    settings = VideoSettings(max_frames=5, **options)
    planned = plan(three_scenes, settings, Limits())
    _, frames = sample(three_scenes, settings, Limits())
    assert not planned.exact and len(planned.frames) >= len(frames)


def test_the_sound_track_streams_at_16_khz(three_scenes):
    with_sound = make_video(SCENES, fps=FPS, audio=True)
    assert sum(len(c) for c in sound_chunks(with_sound, Limits(), "v")) / 16_000 == pytest.approx(
        6.0, abs=0.2
    )
    assert list(sound_chunks(three_scenes, Limits(), "v")) == []
