"""Prompt parsing: A1111 extra-network tags (and, later, attention syntax)."""

from lanskap.prompts.lora_tags import extract_lora_tags, lora_tag

__all__ = ["extract_lora_tags", "lora_tag"]
