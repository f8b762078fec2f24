"""ViP-LLaVA visual prompts: drawing, phrases, region records and the ``vip`` transform.

``VisualPromptTransform`` (entry point ``vip``) is what training uses; ``prompt_inference_image``
draws one prompt for ``vlmkit generate``. Modules: ``phrases`` (colours and words), ``drawing``
(shapes on an RGBA overlay), ``assignment`` (shape/colour per region), ``records`` (region record
types), ``conversations`` (their text), ``transform``, ``inference``.
"""

from .drawing import Region, VisualPrompt, draw_prompts
from .inference import parse_bbox, prompt_inference_image
from .phrases import COLOR_POOL, SHAPE_WORDS, SHAPES, phrase
from .records import REGION_TYPES, VIP_CONFIG
from .transform import VisualPromptTransform

__all__ = ["COLOR_POOL", "REGION_TYPES", "Region", "SHAPES", "SHAPE_WORDS", "VIP_CONFIG", "VisualPrompt",
           "VisualPromptTransform", "draw_prompts", "parse_bbox", "phrase", "prompt_inference_image"]
