"""Live previews while denoising: A1111's "Approx cheap" latent-to-RGB projection.

A fixed 4x3 linear map from SD's scaled latents to RGB (the coefficients A1111 and the
diffusers community use; see huggingface discuss "decoding latents to RGB without upscaling").
It costs one tiny matrix product per preview, so a preview never slows the job it shows;
the picture is 1/8 of the image's size, blurry and a little off in colour, as in A1111.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: SD 1.x / 2.x latent channels -> (R, G, B), from A1111's sd_vae_approx.cheap_approximation.
SD_LATENT_RGB = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)


def cheap_preview(latents: torch.Tensor) -> Image.Image:
    """The first latent of a batch (``[B, C, h, w]`` or ``[C, h, w]``) as a small RGB picture.

    Latents of another width than SD's 4 channels (an unknown VAE) show their first three
    channels, so the preview still moves as the image forms rather than failing.
    """
    x = latents.detach()
    if x.ndim == 4:
        x = x[0]
    x = x.to("cpu", torch.float32)
    if x.shape[0] == SD_LATENT_RGB.shape[0]:
        rgb = torch.einsum("lxy,lr->rxy", x, SD_LATENT_RGB)
    else:
        rgb = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    pixels = (rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
