"""Loading a policy checkpoint for training and export: the model through the product's one
loader (:mod:`wise_perception.policy.loader`, which inference uses too), and a processor
that must be a full multimodal one (image processor + tokenizer + chat template): training
builds prompts with it, and the pipeline needs it in an export. Unlike inference, training may
take the processor from the base model when a checkpoint saved only its tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wise_perception.policy.loader import CheckpointError, first_line

LOG = logging.getLogger(__name__)


def _full_processor(source: str | Path) -> Any | None:
    from transformers import AutoProcessor, ProcessorMixin

    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:
        LOG.info("no processor in %s (%s)", source, first_line(exc))
        return None
    if (
        not isinstance(processor, ProcessorMixin)
        or getattr(processor, "image_processor", None) is None
    ):
        return None
    return processor


def load_processor(source: str | Path, fallbacks: Sequence[str] = ()) -> Any:
    """The checkpoint's full processor; else the first of ``fallbacks`` that has one (the base
    model's), with the checkpoint's own tokenizer when it has one (added tokens, template)."""
    processor = _full_processor(source)
    if processor is not None:
        return processor
    for fallback in fallbacks:
        processor = _full_processor(fallback)
        if processor is None:
            continue
        from transformers import AutoTokenizer

        try:
            processor.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        except Exception as exc:
            LOG.info("keeping %s's tokenizer: %s", fallback, first_line(exc))
        LOG.warning("processor taken from %s (%s has only a tokenizer or none)", fallback, source)
        return processor
    raise CheckpointError(
        f"{source} has no full processor (AutoProcessor gave a bare tokenizer or nothing): not a "
        "vision-language checkpoint, or its image processor files are missing"
    )
