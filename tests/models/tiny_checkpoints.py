"""Tiny random-weight checkpoints written by ``transformers`` itself, with real tokenizers.

Each builder saves a checkpoint directory the way a user would download one (config,
safetensors, tokenizer.json, chat template, preprocessor config) and returns the
``transformers`` model and processor that serve as the reference.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

QWEN_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2-VL's own chat template, as its checkpoints ship it
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_SPLIT = (  # as Qwen2's and Qwen3's tokenizer.json write it
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TINY_DECODER = dict(  # the decoder shape every tiny checkpoint shares
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. What is in this picture? Describe it in a "
    "few words. A red square and a blue circle on a white background; the cat sits on the mat. "
    "It's 12345 steps, isn't it? We'll see\n\n  twice. (cat) (cat) (cat) [dog] [dog] [dog]"
)


def byte_level_tokenizer(
    special: tuple[str, ...],
    eos: str,
    vocab_size: int = 400,
    split: str | None = None,
    bos: str | None = None,
):
    """A byte-level BPE trained on a fixed corpus (deterministic), with ``special`` tokens;
    words split by the regular expression ``split`` where given (as Qwen's and Llama 3's
    ``tokenizer.json`` do), by GPT-2's otherwise; with ``bos``, that token first when the
    tokenizer adds special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 8, trainer)
    return _fast(tok, eos=eos, pad=special[0], bos=bos)


def sentencepiece_style_tokenizer(special: tuple[str, ...], eos: str, bos: str, pad: str):
    """A BPE over SentencePiece-style words, as Llama 2's tokenizer.json (and so LLaVA-1.5's)
    has it: "▁" marks word starts and goes before the input's first word, but not before text
    that follows a special token; ``special[0]`` is the unknown token."""
    tok = Tokenizer(models.BPE(unk_token=special[0]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(special),
        initial_alphabet=list(string.printable),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 8, trainer)
    return _fast(tok, eos=eos, pad=pad, bos=bos, unk=special[0])


def _fast(tok: Tokenizer, eos: str, pad: str, bos: str | None = None, unk: str | None = None):
    """``tok`` as ``transformers`` loads it; with ``bos``, the tokenizer puts that token first
    when it adds special tokens, as Llama's does."""
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos, unk_token=unk
    )


def _processor_without_video(cls, **parts):
    """``transformers`` checks a processor's video part against torchvision's classes, which
    this environment does not install; images never touch it, so build without the check."""
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: None
    try:
        return cls(**parts)
    finally:
        ProcessorMixin.check_argument_for_proper_class = check


_QWEN_VISION = {  # a depth-2 ViT per family; Qwen2.5-VL's first block attends by window
    "qwen2-vl": dict(
        depth=2, embed_dim=32, num_heads=2, hidden_size=64, mlp_ratio=2, spatial_merge_size=2
    ),
    "qwen2.5-vl": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=48,
        num_heads=2,
        out_hidden_size=64,
        window_size=112,
        fullatt_block_indexes=[1],
        spatial_merge_size=2,
    ),
}


def _qwen_vl_classes(family: str):
    import transformers

    prefix = {"qwen2-vl": "Qwen2VL", "qwen2.5-vl": "Qwen2_5_VL"}[family]
    return (
        getattr(transformers, f"{prefix}Config"),
        getattr(transformers, f"{prefix}ForConditionalGeneration"),
        getattr(transformers, f"{prefix}Processor"),
    )


def qwen2_vl(
    directory: Path,
    max_pixels: int = 28 * 28 * 64,
    seed: int = 0,
    family: str = "qwen2-vl",
    shape: dict | None = None,
    dtype: torch.dtype = torch.float32,
):
    """A 2-layer Qwen2-VL or Qwen2.5-VL (``family``) with a depth-2 ViT saved to
    ``directory``, or one of ``shape`` (``text``, ``vision`` and top-level ``config``
    entries, as ``benchmarks/models.py`` gives for real sizes); returns (model, processor)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    config_class, model_class, processor_class = _qwen_vl_classes(family)
    tokenizer = byte_level_tokenizer(QWEN_SPECIAL, eos="<|im_end|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = dict(
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    shape = shape or {}
    config = config_class(
        text_config=text | shape.get("text", {}),
        vision_config=shape.get("vision", _QWEN_VISION[family]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **shape.get("config", {}),
    )
    torch.manual_seed(seed)
    model = model_class._from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(directory)
    images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels)
    images.save_pretrained(directory)
    video_bounds = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
    (directory / "video_preprocessor_config.json").write_text(json.dumps({"size": video_bounds}))
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(QWEN2_VL_TEMPLATE)
    processor = _processor_without_video(
        processor_class,
        image_processor=images,
        tokenizer=tokenizer,
        chat_template=QWEN2_VL_TEMPLATE,
    )
    return model, processor


IDEFICS3_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)
# SmolVLM's chat template, as its checkpoints ship it: list content only
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_SIGLIP = dict(  # 32-pixel tiles of 8-pixel patches: 16 patches, 4 tokens after the shuffle
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def idefics3(
    directory: Path,
    seed: int = 0,
    family: str = "idefics3",
    shape: dict | None = None,
    dtype: torch.dtype = torch.float32,
    tiles: int = 3,
):
    """A 2-layer Idefics3 or SmolVLM (``family``) with a depth-2 SigLIP on 32-pixel tiles, or one
    of ``shape``; images are resized to a longest edge of ``tiles`` tiles (up to ``tiles``²
    tiles and the global view). Returns (model, processor)."""
    import transformers

    prefix = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[family]
    tokenizer = byte_level_tokenizer(IDEFICS3_SPECIAL, eos="<end_of_utterance>", vocab_size=450)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IDEFICS3_SPECIAL[:5]}
    shape = shape or {}
    text = dict(
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=4096,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<end_of_utterance>"],
    )
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text | shape.get("text", {}),
        vision_config=shape.get("vision", _SIGLIP),
        image_token_id=ids["<image>"],
        **({"scale_factor": 2} | shape.get("config", {})),
    )
    torch.manual_seed(seed)
    model_class = getattr(transformers, f"{prefix}ForConditionalGeneration")
    model = model_class._from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.save_pretrained(directory)
    tile = config.vision_config.image_size
    images = getattr(transformers, f"{prefix}ImageProcessorPil")(
        size={"longest_edge": tiles * tile}, max_image_size={"longest_edge": tile}
    )
    images.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(SMOLVLM_TEMPLATE)
    patches = (tile // config.vision_config.patch_size) ** 2
    video = {"video_processor": None} if family == "smolvlm" else {}
    processor = _processor_without_video(
        getattr(transformers, f"{prefix}Processor"),
        image_processor=images,
        tokenizer=tokenizer,
        image_seq_len=patches // config.scale_factor**2,
        chat_template=SMOLVLM_TEMPLATE,
        **video,
    )
    return model, processor


LLAVA_SPECIAL = ("<unk>", "<s>", "</s>", "<image>", "<pad>")
# LLaVA-1.5's chat template, as its checkpoints ship it (without the training-only
# generation markers): list content, every image of a message before its text
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_CLIP = dict(  # 32-pixel images of 8-pixel patches: 16 patches and the class position
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def llava(
    directory: Path,
    seed: int = 0,
    shape: dict | None = None,
    dtype: torch.dtype = torch.float32,
    variant: str = "1.5",
):
    """A 2-layer LLaVA with a depth-3 CLIP tower on 32-pixel images and a SentencePiece-style
    tokenizer (as LLaVA-1.5 has Llama 2's), or one of ``shape``.
    ``variant`` "1.5" is LLaVA-1.5's choice (CLIP's processor, the second-to-last layer, the
    class position dropped); "padded" pads images to a square (LLaVA's own image processor),
    concatenates layers -3 and -1 and keeps the class position. Returns (model, processor)."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessorPil,
        LlavaProcessor,
    )

    tokenizer = sentencepiece_style_tokenizer(LLAVA_SPECIAL, eos="</s>", bos="<s>", pad="<pad>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL}
    shape = shape or {}
    padded = variant == "padded"
    text = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=2048,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )
    config = LlavaConfig(
        text_config=text | shape.get("text", {}),
        vision_config=shape.get("vision", _CLIP),
        image_token_id=ids["<image>"],
        vision_feature_layer=[-3, -1] if padded else -2,
        vision_feature_select_strategy="full" if padded else "default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = ids["</s>"]
    model.save_pretrained(directory)
    side = config.vision_config.image_size
    image_class = LlavaImageProcessorPil if padded else CLIPImageProcessorPil
    images = image_class(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        **({"do_pad": True} if padded else {}),
    )
    images.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(LLAVA_TEMPLATE)
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


ONEVISION_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
# LLaVA-OneVision's chat template, as its checkpoints ship it (without the training-only
# generation markers): ChatML, list content, every image of a message before its text
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ONEVISION_GRID = [[32, 32], [32, 64], [64, 32], [64, 64], [32, 96], [96, 32], [96, 96]]
_SIGLIP_TOWER = dict(  # 32-pixel views of 8-pixel patches, with SigLIP's pooling head
    model_type="siglip_vision_model",
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
    vision_use_head=True,
)


def llava_onevision(
    directory: Path, seed: int = 0, shape: dict | None = None, dtype: torch.dtype = torch.float32
):
    """A 2-layer Qwen2 LLaVA-OneVision with a depth-2 SigLIP on 32-pixel views, a grid of up to
    3×3 views and ``anyres_max_2`` (so larger grids are shrunk), or one of ``shape``. Returns
    (model, processor)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
    )

    tokenizer = byte_level_tokenizer(ONEVISION_SPECIAL, eos="<|im_end|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ONEVISION_SPECIAL}
    shape = shape or {}
    text = dict(
        model_type="qwen2",
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=4096,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    config = LlavaOnevisionConfig(
        text_config=text | shape.get("text", {}),
        vision_config=shape.get("vision", _SIGLIP_TOWER),
        image_token_id=ids["<image>"],
        video_token_id=ids["<video>"],
        image_grid_pinpoints=shape.get("grid", ONEVISION_GRID),
        vision_aspect_ratio=shape.get("aspect_ratio", "anyres_max_2"),
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(directory)
    side = config.vision_config.image_size
    images = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side},
        image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    )
    images.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(ONEVISION_TEMPLATE)
    processor = _processor_without_video(
        LlavaOnevisionProcessor,
        image_processor=images,
        tokenizer=tokenizer,
        video_processor=None,
        num_image_tokens=(side // config.vision_config.patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=config.vision_aspect_ratio,
        chat_template=ONEVISION_TEMPLATE,
    )
    return model, processor


QWEN2_AUDIO_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
)
# Qwen2-Audio-7B-Instruct's chat template, as its checkpoint ships it
QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_WHISPER_TOWER = dict(  # a depth-2 encoder over Whisper-large-v3's 128 mel bins
    d_model=32,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=48,
    num_mel_bins=128,
    max_source_positions=1500,
)


def qwen2_audio(directory: Path, seed: int = 0):
    """A 2-layer Qwen2-Audio with a depth-2 Whisper encoder saved to ``directory``; returns
    (model, processor)."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = byte_level_tokenizer(QWEN2_AUDIO_SPECIAL, eos="<|im_end|>", split=QWEN2_SPLIT)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_AUDIO_SPECIAL}
    text = dict(
        model_type="qwen2",
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=4096,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    config = Qwen2AudioConfig(
        audio_config=_WHISPER_TOWER, text_config=text, audio_token_index=ids["<|AUDIO|>"]
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration._from_config(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(directory)
    features = WhisperFeatureExtractor(feature_size=128)
    features.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(QWEN2_AUDIO_TEMPLATE)
    processor = Qwen2AudioProcessor(
        feature_extractor=features, tokenizer=tokenizer, chat_template=QWEN2_AUDIO_TEMPLATE
    )
    return model, processor


def llama_base(directory: Path, seed: int = 0):
    """A 2-layer Llama base model (no chat template) saved to ``directory``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_level_tokenizer(("<s>", "</s>"), eos="</s>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


GEMMA_SPECIAL = ("<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")
# Gemma's turn layout, string content (the shipped template also takes typed parts)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def gemma3(directory: Path, seed: int = 0):
    """A 3-layer Gemma 3 text model: sliding, full, sliding attention with an 8-token window,
    a query scale of its own, linear RoPE scaling on the full layer. Returns (model, tokenizer)."""
    tokenizer = byte_level_tokenizer(GEMMA_SPECIAL, eos="<end_of_turn>", bos="<bos>")
    tokenizer.chat_template = GEMMA_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA_SPECIAL}
    config = _gemma3_config(
        len(tokenizer), ids["<pad>"], ids["<end_of_turn>"], ids["<bos>"], query_pre_attn_scalar=24
    )
    model = _gemma3_model(config, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def _gemma3_config(vocab_size: int, pad: int, eos: int, bos: int, **shape):
    """The tiny Gemma 3 shape: 3 layers (sliding, full, sliding), an 8-token window, linear
    RoPE scaling on the full layer; ``shape`` overrides."""
    from transformers import Gemma3TextConfig

    fields = {
        **TINY_DECODER,
        "num_hidden_layers": 3,
        "head_dim": 16,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1_000_000.0},
        },
        "max_position_embeddings": 512,
    }
    return Gemma3TextConfig(
        vocab_size=vocab_size,
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=bos,
        **fields | shape,
    )


def _gemma3_model(config, seed: int):
    """Random weights, seeded; Gemma initialises its norms at zero (a scale of 1), so they
    are varied too."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.2)
    return model


CHATML_TEMPLATE = (  # the ChatML layout Qwen's text models ship, string content only
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen3(directory: Path, seed: int = 0, tie: bool = False):
    """A 2-layer Qwen3 (query/key norms, a head width of its own) with a ChatML template."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = byte_level_tokenizer(QWEN_SPECIAL, eos="<|im_end|>", split=QWEN2_SPLIT)
    tokenizer.chat_template = CHATML_TEMPLATE
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def gguf_from_hf(directory: Path, path: Path, arch: str, qtype: str = "F32") -> Path:
    """Write the Hugging Face checkpoint in ``directory`` as a GGUF file the way llama.cpp's
    converter lays it out (its tensor names from ``gguf``'s own map, byte-level BPE vocabulary,
    chat template), matrices in ``qtype`` (F32, F16, Q8_0 or Q4_0)."""
    import json

    import gguf
    from safetensors.torch import load_file

    config = json.loads((directory / "config.json").read_text())
    tok = json.loads((directory / "tokenizer.json").read_text())
    writer = _gguf_writer(path, arch, config)
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    _write_vocabulary(writer, tok, config)
    state = load_file(directory / "model.safetensors")
    _write_tensors(
        writer, state, arch, config["num_hidden_layers"], gguf.GGMLQuantizationType[qtype]
    )
    return path


def _gguf_writer(path: Path, arch: str, config: dict):
    """A GGUF writer holding the decoder's shape from ``config`` (HF ``config.json`` keys)."""
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    return writer


def _write_tensors(writer, state: dict, arch: str, layers: int, quant, norm_shift: float = 0.0):
    """The tensors under llama.cpp's names (norms plus ``norm_shift``), matrices in ``quant``,
    then the file."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], layers)
    for name, tensor in state.items():
        data = tensor.float().numpy()
        if name.endswith("norm.weight"):
            data = data + norm_shift
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if data.ndim == 2 and quant != gguf.GGMLQuantizationType.F32:
            packed = gguf.quants.quantize(data, quant)
            writer.add_tensor(target, packed, raw_shape=packed.shape, raw_dtype=quant)
        else:
            writer.add_tensor(target, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def sentencepiece_vocabulary(user_defined: tuple[str, ...], space_prefix: bool = False):
    """A SentencePiece BPE model trained on the fixed corpus as Gemma's is set up (pad, eos,
    bos, unk first; byte fallback; digits split; whitespace kept as it is; a space before the
    text only with ``space_prefix``, as Llama 2's), with ``user_defined`` pieces. Returns the
    ``SentencePieceProcessor``."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([_CORPUS] * 8 + _CORPUS.split(". ")),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        add_dummy_prefix=space_prefix,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        user_defined_symbols=list(user_defined),
        num_threads=1,
        minloglevel=2,
    )
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())


def gemma3_gguf(path: Path, seed: int = 0):
    """A 3-layer Gemma 3 (sliding, full, sliding; 8-token window; linear RoPE scaling on the
    full layer) written as llama.cpp's converter writes one: norms stored as ``1 + w``, a
    SentencePiece vocabulary with scores and token types (the turn markers as control tokens),
    no space prefix, the chat template. Returns (``transformers`` model, SentencePiece model)."""
    import gguf

    vocabulary = sentencepiece_vocabulary(GEMMA_SPECIAL[3:])
    # llama.cpp scales queries by the head width below the 27B size
    config = _gemma3_config(vocabulary.vocab_size(), 0, 1, 2, query_pre_attn_scalar=16)
    model = _gemma3_model(config, seed)
    writer = _gguf_writer(path, "gemma3", config.to_dict())
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(8)
    writer.add_uint32("gemma3.attention.sliding_window_pattern", 2)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(4.0)
    _write_sentencepiece(writer, vocabulary, control=GEMMA_SPECIAL[3:])
    writer.add_chat_template(GEMMA_TEMPLATE)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    _write_tensors(writer, state, "gemma3", 3, gguf.GGMLQuantizationType.F32, norm_shift=1.0)
    return model, vocabulary


def gemma3_for_llama_cpp(directory: Path, seed: int = 0) -> Path:
    """A 6-layer Gemma 3 directory as llama.cpp's converter reads one: ``tokenizer.model``
    (SentencePiece), the turn markers as special tokens in ``tokenizer_config.json``, the chat
    template; rows 256 wide so that K-quants apply; every sixth layer full, as llama.cpp
    assumes where the file names no pattern."""
    import json

    vocabulary = sentencepiece_vocabulary(GEMMA_SPECIAL[3:])
    config = _gemma3_config(
        vocabulary.vocab_size(),
        0,
        1,
        2,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=16,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
        max_position_embeddings=2048,
        architectures=["Gemma3ForCausalLM"],
    )
    model = _gemma3_model(config, seed)
    model.save_pretrained(directory)
    (directory / "tokenizer.model").write_bytes(vocabulary.serialized_model_proto())
    special = {
        str(vocabulary.PieceToId(token)): {"content": token, "special": True}
        for token in GEMMA_SPECIAL[3:]
    }
    tokenizer_config = {"chat_template": GEMMA_TEMPLATE, "added_tokens_decoder": special}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def sentencepiece_gguf(path: Path, vocabulary, control: tuple[str, ...]) -> Path:
    """A GGUF file holding only ``vocabulary`` (no tensors), as its tokenizer's test needs."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    _write_sentencepiece(writer, vocabulary, control)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_sentencepiece(writer, vocabulary, control: tuple[str, ...]) -> None:
    """The vocabulary as llama.cpp's converter writes a SentencePiece model (pieces, scores,
    types; ``control`` pieces marked as control tokens, as a tokenizer config's special
    tokens are; whether it adds a space prefix)."""
    import gguf

    kind = gguf.TokenType
    pieces = [vocabulary.IdToPiece(i) for i in range(vocabulary.vocab_size())]
    types = [
        kind.UNKNOWN
        if vocabulary.IsUnknown(i)
        else kind.CONTROL
        if vocabulary.IsControl(i) or pieces[i] in control
        else kind.BYTE
        if vocabulary.IsByte(i)
        else kind.NORMAL
        for i in range(len(pieces))
    ]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores([vocabulary.GetScore(i) for i in range(len(pieces))])
    writer.add_token_types(types)
    writer.add_bos_token_id(vocabulary.bos_id())
    writer.add_eos_token_id(vocabulary.eos_id())
    writer.add_pad_token_id(vocabulary.pad_id())
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(_adds_space_prefix(vocabulary))


def _adds_space_prefix(vocabulary) -> bool:
    """Whether the model puts "▁" before its input (its ``add_dummy_prefix``)."""
    return vocabulary.encode("a", out_type=str)[0].startswith("\u2581")


def _write_vocabulary(writer, tok: dict, config: dict) -> None:
    vocab = tok["model"]["vocab"] | {t["content"]: t["id"] for t in tok["added_tokens"]}
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    tokens = sorted(vocab, key=vocab.get)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if vocab[t] in special else 1 for t in tokens])
    merges = tok["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
