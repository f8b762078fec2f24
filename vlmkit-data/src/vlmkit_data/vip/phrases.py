"""How a drawn visual prompt is named in text: colours, shape words, and the phrase built from them.

ViP-LLaVA refers to a region by what was drawn on it: ``"{w1} the {colour} {w2}"``, e.g. "within the
red rectangle", and drops the colour when it was a random RGB with no name ("pointed to by the arrow").
"""

from __future__ import annotations

#: ViP-LLaVA's 9 named colours (components.md §4.2)
COLOR_POOL: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "lime": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "fuchsia": (255, 0, 255),
    "aqua": (0, 255, 255),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "gold": (255, 215, 0),
}

#: shape -> (preposition, noun) (components.md §4.3)
SHAPE_WORDS: dict[str, tuple[str, str]] = {
    "rectangle": ("within", "rectangle"),
    "ellipse": ("within", "ellipse"),
    "triangle": ("with", "triangle"),
    "point": ("at", "point"),
    "scribble": ("with", "scribble"),
    "mask contour": ("with", "mask contour"),
    "mask": ("with", "mask"),
    "arrow": ("pointed to by", "arrow"),
}

SHAPES: tuple[str, ...] = tuple(SHAPE_WORDS)


def phrase(shape: str, color_name: str | None = None, article: bool = True) -> str:
    """``phrase("arrow", "red") == "pointed to by the red arrow"``; ``phrase("point") == "at the point"``.

    ``article=False`` drops "the" ("within red rectangle"), a variation some ViP text builders use.
    """
    w1, w2 = shape_words(shape)
    noun = f"{color_name} {w2}" if color_name else w2
    return f"{w1} the {noun}" if article else f"{w1} {noun}"


def noun_phrase(shape: str, color_name: str | None = None) -> str:
    """The prompt itself as a noun: "the red rectangle", "the arrow" (for hints listing the prompts)."""
    _, w2 = shape_words(shape)
    return f"the {color_name} {w2}" if color_name else f"the {w2}"


def shape_words(shape: str) -> tuple[str, str]:
    try:
        return SHAPE_WORDS[shape]
    except KeyError:
        from vlmkit.errors import ConfigError

        raise ConfigError(f"unknown visual prompt shape '{shape}'; shapes: {', '.join(SHAPES)}") from None


def parse_color(color: str | tuple[int, int, int] | list[int] | None) -> tuple[tuple[int, int, int], str | None]:
    """A named colour, ``"r,g,b"`` / ``"#rrggbb"`` or an RGB triple -> (rgb, name or None)."""
    from vlmkit.errors import ConfigError

    if color is None:
        return COLOR_POOL["red"], "red"
    if isinstance(color, (tuple, list)):
        rgb = tuple(int(c) for c in color)
    else:
        text = color.strip().lower()
        if text in COLOR_POOL:
            return COLOR_POOL[text], text
        try:
            if text.startswith("#") and len(text) == 7:
                rgb = tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
            else:
                rgb = tuple(int(c) for c in text.split(","))
        except ValueError:
            rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ConfigError(f"colour {color!r}: expected one of {', '.join(COLOR_POOL)}, 'r,g,b' or '#rrggbb'")
    name = next((n for n, c in COLOR_POOL.items() if c == rgb), None)
    return rgb, name  # type: ignore[return-value]
