"""lanskap-mini (issue #10, in progress): procedural landscapes, their captions, and an attribute detector."""
