"""Text-to-image generation: parameters, samplers, LoRAs, the engine, output files."""
