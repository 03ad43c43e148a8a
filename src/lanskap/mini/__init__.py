"""lanskap-mini: a small SD 2.1-shaped model trained on procedural landscapes, shipped with lanskap.

The model definition and weights (``model``), the scenes and their captions (``scenes``),
the attribute detector and the prompt-following score (``detect``, ``follow``), and the
trainer for the shipped recipe (``train``). It lets every feature run and be tested on a CPU.
"""
