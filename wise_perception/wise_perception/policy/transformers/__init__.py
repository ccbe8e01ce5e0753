"""The transformers policy backend and its fast path.

``backend`` (:class:`TransformersPolicy`: loading, prompts, batching), ``engine`` (the own
decode loop with static KV caches), ``vision`` (the vision tower with its layout computed once
per grid), ``inputs`` (model inputs built on the device), ``forced_schema`` (the answer
schema's fixed text appended without decoding), ``int8`` (weight-only int8 decode).
Heavy libraries are imported when these modules are, not by this package.
"""
