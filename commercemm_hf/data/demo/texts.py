"""The texts of demo products from templates: titles, descriptions, post captions with hashtags, and partial
search queries in English, Spanish, German and French.
"""

from __future__ import annotations

import numpy as np

from .vocabulary import (
    _GENERIC_TAGS,
    _HASHTAGS,
    CATEGORY_OF,
    COLOURS,
    MATERIALS,
    PATTERNS,
    PRODUCT_TYPES,
    QUERY_LANGUAGES,
    DemoProductSpec,
    _choice,
)


def _pattern_word(spec: DemoProductSpec, rng: np.random.Generator) -> str:
    return _choice(rng, PATTERNS[spec.pattern][0])


def _title(spec: DemoProductSpec, rng: np.random.Generator) -> str:
    brand = spec.brand.capitalize()
    kind = _choice(rng, PRODUCT_TYPES[spec.kind][0]).title()
    colour = spec.colour.capitalize()
    pattern = "" if spec.pattern == "solid" and rng.random() < 0.6 else _pattern_word(spec, rng).capitalize()
    material = spec.material.capitalize()
    templates = (
        f"{brand} {colour} {pattern} {kind}",
        f"{kind} in {colour} {pattern} – {brand}",
        f"{brand} {material} {kind}, {colour} {pattern}",
        f"{colour} {pattern} {material} {kind} by {brand}",
        f"{brand} {kind} ({colour}, {pattern or 'Solid'})",
        f"{pattern} {kind} {colour} | {brand}",
    )
    return " ".join(_choice(rng, templates).split()).replace(" ,", ",").replace("( ", "(")


def _description(spec: DemoProductSpec, rng: np.random.Generator) -> str:
    kind = _choice(rng, PRODUCT_TYPES[spec.kind][0])
    pattern = _pattern_word(spec, rng)
    sentences = []
    opener = _choice(rng, (
        f"This {spec.material} {kind} comes in {spec.colour}",
        f"A {spec.colour} {kind} made of {spec.material}",
        f"Our {kind} in {spec.colour}",
        f"{spec.colour.capitalize()} {kind} from {spec.brand.capitalize()}",
    ))
    if spec.pattern != "solid" and rng.random() < 0.85:
        opener += _choice(rng, (f" with a {pattern} pattern", f", {pattern} design", f" featuring a {pattern} print"))
    sentences.append(opener)
    if "made of" not in opener and "This" not in opener and rng.random() < 0.75:
        sentences.append(_choice(rng, (f"Made of {spec.material}", f"Material: {spec.material}",
                                       f"Crafted from quality {spec.material}")))
    if spec.brand.capitalize() not in opener:
        sentences.append(_choice(rng, (f"By {spec.brand.capitalize()}", f"Brand: {spec.brand.capitalize()}",
                                       f"Part of the {spec.brand.capitalize()} collection")))
    extras = {
        "home": ("Perfect for everyday use", "A cosy touch for any room", "Easy to clean"),
        "fashion": ("True to size", "Comfortable all day long", "Goes with everything"),
        "electronics": ("Two-year warranty", "Long battery life", "Fast charging"),
        "sports": ("Built for the outdoors", "Lightweight and durable", "Great for training"),
    }[CATEGORY_OF[spec.kind]]
    for extra in extras:
        if rng.random() < 0.35:
            sentences.append(extra)
    return ". ".join(sentences) + "."


_QUERY_FIELDS = ("colour", "pattern", "material", "brand")


def _query(spec: DemoProductSpec, rng: np.random.Generator, language: str) -> str:
    """A partial attribute phrase: the type (usually) and one to three other attributes, keyword style."""
    count = int(rng.choice((1, 2, 3), p=(0.2, 0.45, 0.35)))
    fields = [_QUERY_FIELDS[i] for i in sorted(rng.choice(4, size=count, replace=False))]
    names, es, de, fr, _ = PRODUCT_TYPES[spec.kind]
    lang = QUERY_LANGUAGES.index(language)
    words = {
        "brand": spec.brand,
        "colour": spec.colour if lang == 0 else COLOURS[spec.colour][lang],
        "pattern": _pattern_word(spec, rng) if lang == 0 else PATTERNS[spec.pattern][lang],
        "material": spec.material if lang == 0 else MATERIALS[spec.material][lang - 1],
    }
    kind = (_choice(rng, names), es, de, fr)[lang]
    if language == "es":
        words["colour"] = "color " + words["colour"]
        words["material"] = "de " + words["material"]
    elif language == "fr":
        words["material"] = "en " + words["material"]
    elif language == "de" and rng.random() < 0.5:
        words["material"] = "aus " + words["material"]
    parts = [words[field] for field in fields]
    if language == "en" and rng.random() < 0.6:  # natural order: "acme red striped leather backpack"
        phrase = [words[field] for field in ("brand", "colour", "pattern", "material") if field in fields] + [kind]
    else:  # keyword style: "mochila color rojo acme"
        rng.shuffle(parts)
        phrase = [kind] + parts
    if rng.random() < 0.08:  # sometimes the type is left out
        phrase = phrase[:-1] if phrase[-1] == kind else phrase[1:]
    text = " ".join(phrase)
    return text.lower() if language != "de" else text


def _queries(spec: DemoProductSpec, rng: np.random.Generator, languages: list[str]) -> list[str]:
    """One query per language entry, avoiding repeats within a product where a few tries allow."""
    queries: list[str] = []
    for language in languages:
        for _ in range(4):
            query = _query(spec, rng, language)
            if query not in queries:
                break
        queries.append(query)
    return queries


def _caption(spec: DemoProductSpec, rng: np.random.Generator) -> str:
    """A tagged-post caption with hashtags; it names the colour only about half the time."""
    kind = _choice(rng, PRODUCT_TYPES[spec.kind][0])
    colour = f"{spec.colour} " if rng.random() < 0.5 else ""
    pattern = f"{_pattern_word(spec, rng)} " if spec.pattern != "solid" and rng.random() < 0.5 else ""
    brand_tag = "#" + spec.brand
    kind_tag = "#" + kind.replace(" ", "").replace("-", "")
    body = _choice(rng, (
        f"Just got this {colour}{pattern}{kind} from @{spec.brand}",
        f"Can't stop using my new {colour}{pattern}{kind}",
        f"Obsessed with this {pattern}{kind}",
        f"Weekend plans: me and my {colour}{kind}",
        f"New in: {colour}{pattern}{kind}",
        "Look what arrived today",
    ))
    tags = [brand_tag, kind_tag, _choice(rng, _HASHTAGS[CATEGORY_OF[spec.kind]]), _choice(rng, _GENERIC_TAGS)]
    if rng.random() < 0.3:
        tags.append("#" + spec.material)
    rng.shuffle(tags)
    return " ".join(body.split()) + "! " + " ".join(tags[: int(rng.integers(2, len(tags) + 1))])
