"""Settings and limits in one place.

Every field can be overridden by an environment variable named ``OMNILOOM_<FIELD>`` (upper
case), and the CLI overrides the few that people change most. Nothing else in the package reads
the environment.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageSettings:
    """Preprocessing knobs for the embedded vision path (they change token counts)."""

    tile_size: int = 224
    max_tiles: int = 6
    auto_high_above: int = 448  # detail=auto uses high when the long side exceeds this


@dataclass(frozen=True)
class VideoSettings:
    """How frames are sampled from a video part that does not say (``media/video.py``)."""

    strategy: str = "uniform"  # uniform | keyframes | scene | adaptive
    fps: float = 1.0
    max_frames: int = 16
    detail: str = "low"  # each frame's image detail
    pooling: bool = False  # merge near-identical consecutive frames
    pool_threshold: float = 0.02  # mean absolute probe difference under which frames merge
    scene_threshold: float = 0.12  # mean absolute probe difference of a cut, 0–1
    probe_fps: float = 4.0  # adaptive: change probes a second
    max_side: int = 448  # frames are scaled to fit this before their image processor
    audio: bool = False  # transcribe the sound track and interleave it with the frames by time


@dataclass(frozen=True)
class Limits:
    """Bounds on what a request may ask for; each violation is a 4xx, never a crash."""

    max_request_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 16
    max_audio_per_request: int = 4
    max_audio_bytes: int = 25 * 1024 * 1024  # an uploaded or inline audio file (OpenAI's limit)
    max_audio_seconds: float = 1200.0  # decoded duration; longer files are refused early
    max_speech_chars: int = 4096  # the text /v1/audio/speech speaks
    max_videos_per_request: int = 2
    max_video_bytes: int = 256 * 1024 * 1024  # a fetched or inline video (a local file: any)
    max_video_seconds: float = 4 * 3600.0  # from the header before decoding, and while decoding
    max_video_pixels: int = 3840 * 2160  # per frame
    max_video_frames: int = 4 * 3600 * 60  # in the whole file, as its header says
    max_completion_tokens: int = 2048
    max_n: int = 8
    fetch_timeout_s: float = 10.0
    fetch_max_redirects: int = 3
    fetch_allow_domains: str = ""  # comma-separated; non-empty: only these hosts (and subdomains)
    fetch_deny_domains: str = ""  # comma-separated hosts (and subdomains) never fetched
    local_media_dir: str = ""  # file:// URLs are served only from inside this directory
    max_queued_requests: int = 64  # beyond this, new requests get 429 with Retry-After
    request_timeout_s: float = 300.0  # then 503 if it never started, 504 if it was generating
    max_messages: int = 1024
    max_stop_chars: int = 256  # per stop sequence
    max_schema_bytes: int = 64 * 1024  # a response_format's JSON schema, serialised
    max_schema_nodes: int = 2000  # objects, arrays and values in that schema, all nesting levels
    schema_compile_timeout_s: float = 10.0  # then 400: the schema is too complex to compile
    header_timeout_s: float = 10.0  # a connection with no request in progress is closed then
    keep_alive_timeout_s: int = 5  # an idle keep-alive connection is closed then


@dataclass(frozen=True)
class EngineSettings:
    """Scheduler and cache sizes (continuous batching over a paged KV pool)."""

    max_batch: int = 32  # sequences running at once
    step_tokens: int = 256  # tokens per forward pass: decodes first, then prefill chunks
    block_size: int = 16  # tokens per KV block
    kv_cache_mb: int = 512  # the KV pool (at least one full context is always allocated)
    encoder_cache_mb: int = 256


@dataclass(frozen=True)
class ClusterSettings:
    """``omniloom serve --cluster``: the Ray Serve deployments and how requests are routed."""

    address: str = ""  # empty: one process; "local": a Ray instance started here; else Ray's
    media_replicas: int = 1  # LLM engine replicas for requests that carry media
    text_replicas: int = 1  # LLM engine replicas for text-only requests
    encoder_replicas: int = 1
    min_replicas: int = 1  # autoscaling floor of each pool (one that starts below it, its start)
    max_replicas: int = 4  # autoscaling ceiling of each pool
    target_ongoing_requests: int = 8  # autoscaling: in-flight requests a replica should hold
    upscale_delay_s: float = 30.0  # how long the queue must ask for more replicas before adding
    downscale_delay_s: float = 600.0  # how long it must ask for fewer before one drains and stops
    replica_threads: int = 1  # compute threads per replica
    replica_cpus: float = 0.5  # CPUs Ray reserves for each encoder or engine replica
    affinity: bool = True  # route by affinity key (off: Ray Serve's load balancing alone)
    affinity_tokens: int = 32  # a text prompt's leading tokens that pick its replica
    sessions_per_replica: int = 256  # affinity keys a replica holds (least recent dropped)
    num_cpus: int = 0  # "local": the CPUs Ray may schedule; 0: every core
    metrics_port: int = 8080  # "local": where Ray exports every deployment's metrics


WEIGHT_FORMATS = ("float32", "bfloat16", "float16", "int8")  # how backbone weights are stored
PERCEPTION_MODES = ("native", "cascade", "hybrid", "auto")  # how an image reaches the LLM


@dataclass(frozen=True)
class Settings:
    """Server-wide settings."""

    model: str = ""  # checkpoint directory or GGUF file; empty: the embedded default
    model_name: str = ""  # the name it serves under; empty: the checkpoint's (or omniloom-smol)
    chat_template: str = ""  # a Jinja file used instead of the checkpoint's chat template
    max_model_len: int = 0  # caps the context (and so the KV pool's floor); 0: the checkpoint's
    dtype: str = "auto"  # weight format: auto (int8 on a CPU with our kernels) | WEIGHT_FORMATS
    cache_dir: str = ""  # converted weights; empty: $XDG_CACHE_HOME/omniloom; "off": not cached
    threads: int = 0  # 0: one per available core
    seed: int = 0
    perception: str = "auto"  # native | cascade | hybrid | auto (for requests that omit it)
    upstream: str = ""  # gateway mode: an OpenAI-compatible server's /v1 URL runs the LLM step
    upstream_model: str = ""  # the model name sent to it (empty: the served model's)
    familiar_threshold: float = 0.6  # auto: familiarity at which an image's tokens are sent
    scan_media_text: bool = False  # OCR every image to flag prompt injection, native path too
    image_safety: str = "off"  # off | flag (scores in media_safety) | block (refuse at threshold)
    image_safety_threshold: float = 0.8  # open_nsfw score at or above which an image is flagged
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "json"  # json (one object per line) | text
    api_keys_file: str = ""  # JSON of hashed keys (``omniloom keys add``); empty: no auth
    asr_model: str = ""  # a CTranslate2 Whisper directory; empty: the embedded tiny.en
    tts_voice: str = ""  # a Piper voice (.onnx with its .onnx.json); empty: the embedded joe
    image: ImageSettings = field(default_factory=ImageSettings)
    video: VideoSettings = field(default_factory=VideoSettings)
    limits: Limits = field(default_factory=Limits)
    engine: EngineSettings = field(default_factory=EngineSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def weight_cache_dir(self) -> Path | None:
        """Where converted weights are cached (``models/weight_cache.py``), or None."""
        if self.cache_dir == "off":
            return None
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "omniloom"

    @property
    def thread_count(self) -> int:
        """Threads to compute on: the setting, else every core this process may use (the
        speech runtimes' own defaults oversubscribe a small machine)."""
        return self.threads or len(os.sched_getaffinity(0))

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then ``OMNILOOM_*`` environment variables, then explicit overrides."""
        base = _apply_env(cls(), "OMNILOOM_")
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _apply_env(obj: Any, prefix: str) -> Any:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = _apply_env(value, f"{prefix}{f.name.upper()}_")
            continue
        name = f"{prefix}{f.name.upper()}"
        raw = os.environ.get(name)
        if raw is not None:
            changes[f.name] = _parse(name, raw, type(value))
    return dataclasses.replace(obj, **changes)


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _parse(name: str, raw: str, kind: type) -> Any:
    """``raw`` as the field's type; a value that is not one is refused with its variable."""
    if kind is bool:
        if raw.strip().lower() not in _BOOLEANS:
            raise ValueError(f"{name}={raw!r}: expected one of 0, 1, true, false, yes, no")
        return _BOOLEANS[raw.strip().lower()]
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a value of type {kind.__name__}") from None
