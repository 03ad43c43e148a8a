"""Tiny BLIP (captioner), CLIP (metrics) and FID Inception models, saved like the real ones."""

from __future__ import annotations

from pathlib import Path

from lanskap.models.tokenizer import CORPUS, write_clip_tokenizer


def build_blip(out: Path) -> None:
    """BlipForConditionalGeneration + BlipProcessor (PIL image processor, BERT WordPiece vocab)."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-")
    vocab_list = [*specials, *dict.fromkeys(CORPUS), *letters, *(f"##{ch}" for ch in letters), "[DEC]"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    tokenizer.model_max_length = 64
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "encoder_hidden_size": 32,
            "max_position_embeddings": 64,
            "bos_token_id": vocab["[DEC]"],
            "sep_token_id": vocab["[SEP]"],
            "pad_token_id": vocab["[PAD]"],
        },
        vision_config={
            "hidden_size": 32,
            "image_size": 64,
            "patch_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
        },
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(BlipImageProcessorPil(size={"height": 64, "width": 64}), tokenizer)
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))


def build_clip(out: Path) -> None:
    """CLIPModel (text + vision towers) + CLIPProcessor, as used for CMMD and CLIP score."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab_size = write_clip_tokenizer(out / "_tok", pad_token="<|endoftext|>")
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "_tok"))
    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(str(out), safe_serialization=True)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(out))
    import shutil

    shutil.rmtree(out / "_tok")


def build_inception(out: Path) -> None:
    """The FID Inception-v3 architecture at 1/8 width (256-d features instead of 2048)."""
    import torch

    from lanskap.evaluation.inception import FIDInceptionV3, save_inception

    torch.manual_seed(0)
    model = FIDInceptionV3(width=0.125)
    # Random convolutions shrink activations layer by layer until the features are ~1e-8 and
    # every image looks alike. Calibrating the BatchNorm statistics on a few smooth random
    # pictures (as trained weights would have them) keeps the features at unit scale, so the
    # tiny model tells images apart and FID/KID tests measure something.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(4):
            small = torch.rand(8, 3, 8, 8, generator=gen)
            model(torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear"))
    # Real pool3 features are small and non-negative (mean about 0.3); scaling the last block's
    # BatchNorm outputs (ReLU is positively homogeneous) gives the tiny model the same range,
    # so KID's polynomial kernel sees values of the usual size.
    with torch.no_grad():
        for m in model.Mixed_7c.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(0.01)
                m.bias.mul_(0.01)
    save_inception(model.eval(), out)


def depth_estimator():
    """A tiny DPT (MiDaS's architecture, without the hybrid backbone) and its PIL image processor."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, image_size=64,
        patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_in_index=-1, is_hybrid=False,
    )  # fmt: skip
    processor = DPTImageProcessorPil(size={"height": 64, "width": 64}, keep_aspect_ratio=False)
    return DPTForDepthEstimation(config), processor


def build_depth_estimator(out: Path) -> None:
    """A transformers depth-estimation folder, loadable as ``annotators/depth_midas``."""
    model, processor = depth_estimator()
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
