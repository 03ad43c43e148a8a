"""Upscaling: A1111's upscalers by name (plain, latent, ESRGAN-family files, SD x4), tile by tile,
and SD upscale (tiled img2img over an enlarged picture)."""
