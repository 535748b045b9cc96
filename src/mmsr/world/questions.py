"""FVQA-style questions about the world's entities, each showing a photo of a flag.

Like the paper's visual-entity questions, every question's first step is to identify
the entity in the image: "which flag is this" asks it directly, attribute questions
("the capital of the country or territory whose flag is shown") need it as a hop.

`category` is a *prior* written at build time: `search_free` when the entity is
familiar and the question is either the flag itself or a widely known attribute
(capital, continent); otherwise `search_required`. The balance step re-labels
categories later from what the nano model actually knows (paper, section 3.2).
"""

from __future__ import annotations

from mmsr.data.record import Sample, SampleImage
from mmsr.world.entities import Entity

FLAG = "flag"
# Question type -> template; `{subject}` is replaced by the phrase naming the entity.
TEMPLATES = {
    FLAG: "Which country or territory is this the flag of?",
    "capital": "What is the capital of {subject}?",
    "currency": "What currency is used in {subject}?",
    "internet_code": "What is the internet country code (top-level domain) of {subject}?",
    "independence": "In what year did {subject} become independent?",
    "official_language": "What is the official language of {subject}?",
    "continent": "On which continent is {subject}?",
    "anthem": "What is the title of the national anthem of {subject}?",
    "highest_point": "What is the highest point of {subject}?",
    "largest_city": "What is the largest city of {subject}?",
}
QUESTION_TYPES = tuple(TEMPLATES)
# What each question type asks for, in the template's own words (only "independence" is
# not verbatim: the template says "become independent"), so a policy can name the topic
# of its text search by copying it out of the question.
TOPICS = {
    FLAG: "flag",
    "capital": "capital",
    "currency": "currency",
    "internet_code": "internet country code",
    "independence": "independence",
    "official_language": "official language",
    "continent": "continent",
    "anthem": "national anthem",
    "highest_point": "highest point",
    "largest_city": "largest city",
}
SUBJECT = "the country or territory whose flag is shown"
# Facts a small model tends to know for well-known places (the prior, see above).
COMMON_KNOWLEDGE = frozenset({FLAG, "capital", "continent"})
TAGS = {
    FLAG: ["geography", "flag", "visual_entity"],
    "capital": ["geography", "capital", "attribute"],
    "currency": ["economy", "currency", "attribute"],
    "internet_code": ["technology", "internet_code", "attribute"],
    "independence": ["history", "independence", "attribute"],
    "official_language": ["culture", "language", "attribute"],
    "continent": ["geography", "continent", "attribute"],
    "anthem": ["culture", "anthem", "attribute"],
    "highest_point": ["geography", "highest_point", "attribute"],
    "largest_city": ["geography", "largest_city", "attribute"],
}


def question_id(entity: Entity, qtype: str) -> str:
    return f"world-{entity.id}-{qtype}"


def image_path(sample_id: str) -> str:
    """Relative asset path of a question's photo."""
    return f"images/{sample_id}.jpg"


def entity_questions(entity: Entity) -> list[Sample]:
    """Questions about one entity, in `QUESTION_TYPES` order; none for look-alike extras."""
    if not entity.asks_flag:
        return []
    samples = [_sample(entity, FLAG, entity.name, entity.aliases)]
    for qtype in QUESTION_TYPES[1:]:
        fact = entity.facts.get(qtype)
        if fact is None:
            continue
        samples.append(_sample(entity, qtype, fact.answer, fact.aliases))
    return samples


def _sample(entity: Entity, qtype: str, answer: str, aliases: list[str]) -> Sample:
    question = TEMPLATES[qtype].format(subject=SUBJECT)
    if qtype == "official_language" and aliases and _several_languages(entity):
        question = f"Name an official language of {SUBJECT}."
    sample_id = question_id(entity, qtype)
    searchless = entity.familiar and qtype in COMMON_KNOWLEDGE
    return Sample(
        id=sample_id,
        question=question,
        answer=answer,
        images=[SampleImage(path=image_path(sample_id))],
        aliases=list(aliases),
        category="search_free" if searchless else "search_required",
        tools="image" if qtype == FLAG else "both",
        source=f"world/{qtype}",
        tags=[*TAGS[qtype], "familiar" if entity.familiar else "unfamiliar"],
        split=entity.split,
        extra={"entity": entity.id, "qtype": qtype},
    )


def _several_languages(entity: Entity) -> bool:
    """True when the factbook marks more than one language official (any is accepted)."""
    fact = entity.facts["official_language"]
    return fact.text.count("official") > 1
