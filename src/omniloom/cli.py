"""Command line: ``omniloom serve | chat | tokens | train | train-audio | eval | keys``.

``serve`` runs the HTTP server; ``chat`` answers one question (with optional images) without a
server, or without a question holds a conversation; ``tokens`` prints what images and videos
cost in tokens and money across models and providers (without importing torch, so it answers
at once); ``train`` runs the vision-adapter recipe; ``eval`` runs an evaluation suite through
the server.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import mimetypes
import signal
import sys
import threading
from pathlib import Path

from omniloom.config import PERCEPTION_MODES, WEIGHT_FORMATS, Settings

EXIT_ENGINE_FAILED = 3  # ``serve``: the engine loop died (already logged); restart the process


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        "--weights",
        dest="weights",
        help="Hugging Face checkpoint directory or GGUF file (default: the embedded omniloom-smol)",
    )
    p.add_argument("--served-model-name", help="the name clients use (default: the checkpoint's)")
    p.add_argument("--chat-template", help="Jinja chat template file, for checkpoints without one")
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="cap the context length (default: the checkpoint's; the KV pool holds at least one)",
    )
    p.add_argument("--dtype", choices=["auto", *WEIGHT_FORMATS], default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument(
        "--perception",
        choices=list(PERCEPTION_MODES),
        default=None,
        help="default image path: projector tokens, OCR/label text instead, both, or auto "
        "(both where the adapter knows images like it, else the text alone)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from omniloom.runtime import build_state
    from omniloom.serving import logs
    from omniloom.serving.http import make_server

    settings = Settings.from_env(
        model_name=args.served_model_name,
        chat_template=args.chat_template,
        max_model_len=args.max_model_len,
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        threads=args.threads,
        log_format=args.log_format,
        image_safety=args.image_safety,
        upstream=args.upstream,
        upstream_model=args.upstream_model,
    )
    logs.configure(settings.log_format, args.log_level)
    if args.cluster or settings.cluster.address:
        return _serve_cluster(settings, args)
    state = build_state(settings, weights=args.weights, start_engine=False)
    state.image_safety()  # load the classifier now, if the policy is on: fail fast
    server = make_server(
        state,
        settings.host,
        settings.port,
        log_level=args.log_level,
        log_config=None,  # keep logs.configure's handlers
        access_log=False,  # the middleware logs each request
    )
    http = threading.Thread(target=server.run, name="http", daemon=True)

    def stop(*_) -> None:  # finish in-flight requests, then stop the engine
        server.should_exit = True

    def engine_stops_after_http() -> None:
        http.join()
        state.engine.shutdown()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    http.start()
    threading.Thread(target=engine_stops_after_http, daemon=True).start()
    print(
        f"omniloom: serving {state.model.name} on http://{settings.host}:{settings.port}/v1",
        flush=True,
    )
    return _run_engine(state, server, http)


def _serve_cluster(settings: Settings, args: argparse.Namespace) -> int:
    from omniloom.cluster.launch import serve_cluster

    address = args.cluster or settings.cluster.address
    settings = dataclasses.replace(
        settings,
        model=args.weights or settings.model,
        cluster=dataclasses.replace(settings.cluster, address=address),
    )
    return serve_cluster(settings)


def _run_engine(state, server, http: threading.Thread) -> int:
    """The engine loop on the main thread (see ``Engine.run_forever``) until shutdown. Should
    the loop die, the HTTP server stops and the process exits with ``EXIT_ENGINE_FAILED`` for
    its supervisor (systemd, a container runtime) to restart it."""
    try:
        state.engine.run_forever()
    except BaseException:
        server.should_exit = True
        http.join(timeout=30)
        return EXIT_ENGINE_FAILED
    return 0 if server.started else 1  # e.g. the port was taken


def _image_part(path: str, detail: str) -> dict:
    data = Path(path).read_bytes()
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def cmd_chat(args: argparse.Namespace) -> int:
    """One answer to ``args.question``; without one, a conversation read line by line."""
    from omniloom.runtime import build_state

    settings = Settings.from_env(
        model_name=args.served_model_name,
        chat_template=args.chat_template,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        threads=args.threads,
        perception=args.perception,
    )
    state = build_state(settings, weights=args.weights, start_engine=False)
    images = [_image_part(p, args.detail) for p in args.image]
    if args.question is not None:
        messages = [{"role": "user", "content": [{"type": "text", "text": args.question}, *images]}]
        return 0 if _answer(state, settings, messages, args) is not None else 2
    return _converse(state, settings, images, args)


CHAT_HELP = "Type a message. /image PATH attaches a picture to the next one; /reset forgets; /quit."


def _converse(state, settings: Settings, images: list[dict], args: argparse.Namespace) -> int:
    print(f"omniloom chat with {state.model.name}. {CHAT_HELP}")
    history: list[dict] = []
    while (line := _read_line()) is not None:
        command, _, rest = line.strip().partition(" ")
        if command == "/quit":
            break
        if command == "/reset":
            history, images = [], []
        elif command == "/image":
            images = _attach(images, rest.strip(), args.detail)
        elif line.strip():
            content = [{"type": "text", "text": line.strip()}, *images]
            answer = _answer(
                state, settings, [*history, {"role": "user", "content": content}], args
            )
            if answer is not None:
                history += [{"role": "user", "content": content}]
                history += [{"role": "assistant", "content": answer}]
                images = []
    return 0


def _read_line() -> str | None:
    try:
        return input("> ")
    except EOFError:
        return None


def _attach(images: list[dict], path: str, detail: str) -> list[dict]:
    if not Path(path).is_file():
        print(f"error: no file {path!r}", file=sys.stderr)
        return images
    print(f"attached {path}")
    return [*images, _image_part(path, detail)]


def _answer(state, settings: Settings, messages: list[dict], args) -> str | None:
    """Stream the answer to ``messages`` to stdout; the answer, or None after an error."""
    from omniloom.engine.engine import Delta, Job
    from omniloom.errors import OmniloomError
    from omniloom.serving.requests import prepare
    from omniloom.serving.schemas import ChatCompletionRequest

    body = ChatCompletionRequest(
        model=state.model.name,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    try:
        prepared = prepare(
            body, state.model, settings, state.cascade_for(None), state.engine.grammars
        )
    except OmniloomError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return None
    pieces: list[str] = []

    def show(event) -> None:
        if isinstance(event, Delta):
            pieces.append(event.text)
            print(event.text, end="", flush=True)

    state.engine.run_to_completion(Job(prepared.prompt, prepared.params, emit=show))
    print()
    return "".join(pieces)


def cmd_tokens(args: argparse.Namespace) -> int:
    from omniloom.models.default_layout import default_tile_layout
    from omniloom.processing.costs import image_cost_table, render_table

    settings = _video_settings_from_args(Settings.from_env(), args)
    layout = default_tile_layout(settings.image.tile_size)
    checkpoint = _checkpoint_image_row(args.model) if args.model else None
    for path in args.images:
        if _is_video(Path(path)):
            print(render_table(path, _video_rows(Path(path), settings, layout, args.model)))
            continue
        data = Path(path).read_bytes()
        rows = image_cost_table(data, args.detail, settings, layout)
        if checkpoint:
            rows.insert(0, checkpoint(data, args.detail, settings))
        print(render_table(path, rows))
    return 0


def _is_video(path: Path) -> bool:
    """Whether ``path`` holds a video (anything an image decoder does not open)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return False
    except UnidentifiedImageError:
        return True


def _video_settings_from_args(settings: Settings, args: argparse.Namespace) -> Settings:
    import dataclasses

    asked = {
        "strategy": args.strategy,
        "fps": args.fps,
        "max_frames": args.max_frames,
        "detail": None if args.detail == "auto" else args.detail,
    }
    chosen = {key: value for key, value in asked.items() if value is not None}
    return dataclasses.replace(settings, video=dataclasses.replace(settings.video, **chosen))


def _video_rows(path: Path, settings: Settings, layout, model: str | None) -> list:
    """The video's rows: the embedded default (and ``model``'s own processor), then hosted."""
    from omniloom.models.registry import load_video_processor
    from omniloom.processing.costs import omniloom_tokens
    from omniloom.processing.video_costs import processor_tokens, video_cost_table

    def default(planned) -> int:
        width, height = planned.frames[0].image.size
        each = omniloom_tokens(width, height, settings.video.detail, settings, layout).tokens
        return each * len(planned.frames)

    served = [("omniloom-smol", default)]
    if model:
        processor = load_video_processor(model)
        if processor is None:
            raise SystemExit(f"error: {model} takes no video")
        served.insert(0, (Path(model).name, processor_tokens(processor, settings)))
    return video_cost_table(path, settings, served)


def _checkpoint_image_row(model: str):
    """A table row maker for the checkpoint at ``model``: its own processor's exact span."""
    from omniloom.media.image import decode_image
    from omniloom.models.registry import load_image_processor
    from omniloom.processing.costs import CostRow

    processor = load_image_processor(model)
    if processor is None:
        raise SystemExit(f"error: {model} takes no images")

    def row(data: bytes, detail: str, settings: Settings) -> CostRow:
        item = processor.prepare(decode_image(data, settings.limits), detail, settings.image)
        how = f"its processor: {item.num_placeholders()} placeholders in the span"
        return CostRow(Path(model).name, len(item.token_ids()), how, None)

    return row


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import shutil

    import torch

    from omniloom.models.registry import ADAPTER, load_model
    from omniloom.training.trainer import QUICK_RECIPE, Recipe, Trainer

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model = load_model(dtype="float32", fresh_adapter=True)
    recipe = QUICK_RECIPE if args.quick else Recipe()
    if args.precision:
        recipe = dataclasses.replace(recipe, precision=args.precision)
    trainer = Trainer(model, recipe, Path(args.out))
    if args.from_stage:
        trainer.start_stage(args.from_stage, Path(args.from_adapter or ADAPTER))
    progress = trainer.run()
    print(f"validation loss: {progress.val_loss}; loss curve: {Path(args.out) / 'loss.png'}")
    if args.install:
        shutil.copy(Path(args.out) / "adapter.safetensors", ADAPTER)
        print(f"installed {ADAPTER}")
    return 0


def cmd_train_audio(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import shutil

    import torch

    from omniloom.models.audio_branch import AUDIO_ADAPTER
    from omniloom.speech.asr import Transcriber
    from omniloom.speech.tts import Synthesizer
    from omniloom.training import audio

    torch.set_num_threads(args.threads or torch.get_num_threads())
    recipe = audio.QUICK_AUDIO_RECIPE if args.quick else audio.AudioRecipe()
    if args.steps:
        recipe = dataclasses.replace(recipe, steps=args.steps)
    model = audio.trainable_model()
    trainer = audio.AudioTrainer(model, recipe, Path(args.out))
    synthesizer = Synthesizer(threads=torch.get_num_threads())
    trainer.run(synthesizer)
    evaluation = audio.evaluate(model, synthesizer, Transcriber(threads=torch.get_num_threads()))
    path = trainer.save(evaluation)
    print(json.dumps(evaluation, indent=2))
    print(f"audio adapter: {path}")
    if args.install:
        shutil.copy(path, AUDIO_ADAPTER)
        print(f"installed {AUDIO_ADAPTER}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import openai

    from omniloom.eval import video_suite, vision
    from omniloom.runtime import BackgroundServer, build_state

    default = video_suite.CONDITIONS if args.suite == "video" else vision.DEFAULT_CONDITIONS
    conditions = tuple(args.conditions.split(",")) if args.conditions else default
    unknown = [c for c in conditions if c not in vision.CONDITIONS]
    if unknown:
        choices = ", ".join(vision.CONDITIONS)
        print(f"error: unknown condition {unknown[0]!r}; choose from {choices}", file=sys.stderr)
        return 2
    if args.jsonl:
        items = vision.jsonl_items(Path(args.jsonl))
    elif args.suite == "photos":
        items = vision.photo_items()
    elif args.suite == "video":
        items = video_suite.video_items(args.limit)
    else:
        items = vision.synthetic_items(args.limit)
    state = build_state(Settings.from_env(dtype=args.dtype))
    with BackgroundServer(state) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        results = vision.run_suite(client, state.model.name, items, conditions, _print_progress)
    if args.suite == "video":
        results["prior"] = video_suite.prior(items)
    suite = {
        "vision": "vision suite (synthetic test split)",
        "photos": "real photographs",
        "video": "video suite (synthetic test videos)",
    }
    title = f"omniloom eval — {args.jsonl or suite[args.suite]}"
    vision.write_report(results, Path(args.out), title)
    print("\n" + (Path(args.out) / "report.md").read_text())
    return 0


def cmd_keys_add(args: argparse.Namespace) -> int:
    from omniloom.serving.auth import add_key

    try:
        key = add_key(Path(args.file), args.name, args.rpm, args.tpm)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(key)
    return 0


def _print_progress(condition: str, done: int, total: int) -> None:
    if done % 25 == 0 or done == total:
        print(f"{condition}: {done}/{total}", file=sys.stderr, flush=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omniloom")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniloom", description=__doc__)
    parser.add_argument("--version", action="version", version=f"omniloom {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible HTTP server")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="gateway mode: an OpenAI-compatible server's /v1 URL (llama.cpp, vLLM, SGLang) "
        "serving the same model runs the LLM step; media reach it as words",
    )
    serve.add_argument(
        "--upstream-model", help="the model name to send upstream (default: the served name)"
    )
    serve.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="deploy on Ray Serve: 'local' starts Ray here, else a Ray address to join "
        "(pools and routing: OMNILOOM_CLUSTER_*, docs/cluster.md)",
    )
    serve.add_argument("--log-format", choices=["json", "text"], default=None)
    serve.add_argument(
        "--image-safety",
        choices=["off", "flag", "block"],
        default=None,
        help="image safety classifier policy (threshold: OMNILOOM_IMAGE_SAFETY_THRESHOLD)",
    )
    _add_model_args(serve)
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser(
        "chat", help="answer a question without a server (no question: a conversation)"
    )
    chat.add_argument("question", nargs="?")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    chat.add_argument("--detail", choices=["low", "high", "auto"], default="auto")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--seed", type=int, default=0)
    _add_model_args(chat)
    chat.set_defaults(func=cmd_chat)

    tokens = sub.add_parser("tokens", help="image and video token counts and costs across models")
    tokens.add_argument("images", nargs="+", help="image or video files")
    tokens.add_argument("--detail", choices=["low", "high", "auto"], default="auto")
    tokens.add_argument("--strategy", help="video frame sampling (uniform, keyframes, scene, ...)")
    tokens.add_argument("--fps", type=float, help="video frames a second (uniform)")
    tokens.add_argument("--max-frames", type=int, help="at most this many video frames")
    tokens.add_argument(
        "--model", help="also count for this checkpoint (directory or GGUF), with its processor"
    )
    tokens.set_defaults(func=cmd_tokens)

    train = sub.add_parser(
        "train",
        help="train the vision adapter (stages ground, align, instruct, place, position, video)",
    )
    train.add_argument("--out", default="runs/train", help="run directory (resumes if present)")
    train.add_argument("--quick", action="store_true", help="a tiny recipe, for smoke tests")
    train.add_argument("--install", action="store_true", help="copy the result into the package")
    train.add_argument(
        "--from-stage",
        help="start at this stage (e.g. video) from an adapter of the stages before it",
    )
    train.add_argument(
        "--from-adapter",
        help="that adapter (default: the installed one, if it has not had the stage)",
    )
    train.add_argument("--threads", type=int, default=None)
    train.add_argument(
        "--precision",
        choices=("bfloat16", "float32"),
        help="matmul precision of the steps (default: the recipe's, bfloat16; float32 is for CPUs "
        "without native bf16, where it is faster, and trains slightly different weights)",
    )
    train.set_defaults(func=cmd_train)

    train_audio = sub.add_parser(
        "train-audio",
        help="train the embedded model's audio projector on synthesised speech, then compare "
        "its native path with the speech cascade on held-out speech",
    )
    train_audio.add_argument("--out", default="runs/train-audio", help="run directory")
    train_audio.add_argument("--quick", action="store_true", help="a tiny recipe, for tests")
    train_audio.add_argument("--steps", type=int, help="training steps (the recipe's otherwise)")
    train_audio.add_argument("--install", action="store_true", help="copy it into the package")
    train_audio.add_argument("--threads", type=int, default=None)
    train_audio.set_defaults(func=cmd_train_audio)

    keys = sub.add_parser("keys", help="manage API keys (stored hashed)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    add = keys_sub.add_parser("add", help="create a key; it is printed once, never stored")
    add.add_argument("name")
    add.add_argument("--file", required=True, help="the key file (OMNILOOM_API_KEYS_FILE)")
    add.add_argument("--rpm", type=int, default=60, help="requests per minute")
    add.add_argument("--tpm", type=int, default=100_000, help="tokens per minute")
    add.set_defaults(func=cmd_keys_add)

    ev = sub.add_parser("eval", help="evaluate through the real server and write a report")
    ev.add_argument(
        "--suite",
        choices=["vision", "photos", "video"],
        default="vision",
        help="synthetic test split, real scikit-image photographs (name what they show), or "
        "synthetic test videos (scenes, cuts, text appearing)",
    )
    ev.add_argument("--limit", type=int, default=300, help="questions per condition")
    ev.add_argument("--jsonl", help="a user set of {image, question, answer} lines instead")
    ev.add_argument(
        "--conditions",
        help="comma-separated (default: native,cascade,auto,blind; video: native,blind)",
    )
    ev.add_argument("--out", default="runs/eval")
    ev.add_argument("--dtype", choices=["auto", *WEIGHT_FORMATS], default=None)
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
