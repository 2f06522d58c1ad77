"""A seeded generator of GSM8K-style multi-step arithmetic word problems.

Every problem comes with correct step-by-step reasoning (one sentence and one
``a op b = c`` computation per step) and its integer answer. Three story
families (a collection that changes, a shopping trip, a production rate), several
phrasings per operation, 1-4 steps and number ranges that grow with the step
count make it varied enough that a small model cannot memorise it: it has to
learn the arithmetic and the format.

``numbers="small"`` draws a simpler variety for models of a few hundred thousand
parameters (the ``demo`` profile): collections only, starting at 2-12 and changed by
one-digit amounts, one wording per sentence, with one bare computation per step
(``12 + 3 = 15``), so every step is an addition or subtraction fact a tiny model can
learn in minutes, and what makes a problem hard is the number of steps.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from workings.data.example import Example, example_id

NAMES = [
    ("Ava", "she"), ("Ben", "he"), ("Chloe", "she"), ("Dev", "he"), ("Elena", "she"), ("Farid", "he"),
    ("Grace", "she"), ("Hugo", "he"), ("Ines", "she"), ("Jonah", "he"), ("Keiko", "she"), ("Liam", "he"),
    ("Maya", "she"), ("Noah", "he"), ("Olga", "she"), ("Pedro", "he"), ("Quinn", "they"), ("Rosa", "she"),
    ("Sami", "he"), ("Tara", "she"), ("Umar", "he"), ("Vera", "she"), ("Wes", "he"), ("Yara", "she"),
]
ITEMS = [
    "marbles", "stickers", "apples", "books", "pencils", "seashells", "cookies", "stamps", "cards",
    "beads", "coins", "crayons", "oranges", "buttons", "postcards", "eggs", "shells", "toy cars",
]
CONTAINERS = ["bags", "boxes", "packs", "jars", "crates", "baskets"]
PRODUCTS = [("bakery", "loaves"), ("factory", "chairs"), ("printer", "pages"), ("farm", "eggs"),
            ("workshop", "toys"), ("kitchen", "meals")]
SHOP_ITEMS = ["notebooks", "pens", "sandwiches", "tickets", "plants", "mugs", "candles", "puzzles"]
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
MULTIPLES = {2: "doubles", 3: "triples"}


def _verb(pronoun: str, singular: str, plural: str) -> str:
    return plural if pronoun == "they" else singular


class _Story:
    """A running quantity with the question sentences and reasoning steps written so far."""

    def __init__(self, rng: random.Random, scale: int):
        self.rng, self.scale = rng, scale
        self.question: list[str] = []
        self.steps: list[str] = []

    def n(self, low: int, high: int) -> int:
        return self.rng.randint(low, high * self.scale)


def _collection(story: _Story, n_steps: int) -> tuple[str, int]:
    rng = story.rng
    name, pron = rng.choice(NAMES)
    other = rng.choice([n for n, _ in NAMES if n != name])
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    Pron = pron.capitalize()
    cur = story.n(5, 40)
    story.question.append(rng.choice([
        f"{name} has {cur} {item}.", f"{name} starts the week with {cur} {item}.",
        f"There are {cur} {item} in {name}'s collection.",
    ]))

    def add() -> int:
        k = story.n(2, 30)
        story.question.append(rng.choice([
            f"{Pron} {_verb(pron, 'finds', 'find')} {k} more {item}.",
            f"{other} gives {name} {k} {item}.",
            f"On Monday {pron} {_verb(pron, 'gets', 'get')} another {k} {item}.",
        ]))
        story.steps.append(f"After getting {k} more, {name} has {cur} + {k} = {cur + k} {item}.")
        return cur + k

    def subtract() -> int:
        k = rng.randint(1, max(1, cur - 1))
        story.question.append(rng.choice([
            f"{Pron} {_verb(pron, 'gives', 'give')} {k} {item} to {other}.",
            f"{Pron} {_verb(pron, 'loses', 'lose')} {k} of them.",
            f"Later {pron} {_verb(pron, 'trades', 'trade')} away {k} {item}.",
        ]))
        story.steps.append(f"Giving up {k} leaves {cur} - {k} = {cur - k} {item}.")
        return cur - k

    def groups() -> int:
        g, k = rng.randint(2, 6), story.n(2, 12)
        story.question.append(rng.choice([
            f"{Pron} {_verb(pron, 'buys', 'buy')} {g} {box} of {item} with {k} in each.",
            f"Then {pron} {_verb(pron, 'receives', 'receive')} {g} {box}, each holding {k} {item}.",
        ]))
        story.steps.append(f"The {g} {box} hold {g} * {k} = {g * k} {item}.")
        story.steps.append(f"So {name} now has {cur} + {g * k} = {cur + g * k} {item}.")
        return cur + g * k

    def multiply() -> int:
        m = rng.choice(list(MULTIPLES))
        story.question.append(f"By the end of the month {name}'s collection {MULTIPLES[m]}.")
        story.steps.append(f"The collection {MULTIPLES[m]}: {cur} * {m} = {cur * m} {item}.")
        return cur * m

    def share() -> int:
        d = rng.choice([d for d in FRACTIONS if cur % d == 0])
        part = cur // d
        story.question.append(rng.choice([
            f"{Pron} {_verb(pron, 'gives', 'give')} away {FRACTIONS[d]} of {_verb(pron, 'her', 'their') if pron != 'he' else 'his'} {item}.",
            f"{Pron} {_verb(pron, 'donates', 'donate')} {FRACTIONS[d]} of the {item} to a school.",
        ]))
        story.steps.append(f"{FRACTIONS[d].capitalize()} of {cur} is {cur} / {d} = {part}.")
        story.steps.append(f"That leaves {cur} - {part} = {cur - part} {item}.")
        return cur - part

    n_ops = max(1, n_steps - 1)  # the ending below may add the last step
    for _ in range(n_ops):
        ops: list[Callable[[], int]] = [add, groups]
        if cur > 2:
            ops.append(subtract)
        if cur < 60:
            ops.append(multiply)
        if any(cur % d == 0 for d in FRACTIONS):
            ops.append(share)
        cur = rng.choice(ops)()

    ending = rng.random()
    divisors = [d for d in range(2, 10) if cur % d == 0 and cur // d > 1]
    if n_steps == 1:
        ending = 1.0  # one step: the operation above is the whole problem
    if ending < 0.3 and divisors:
        d = rng.choice(divisors)
        story.question.append(f"If {pron} {_verb(pron, 'puts', 'put')} them equally into {d} {box}, how many {item} go in each?")
        story.steps.append(f"Splitting {cur} {item} into {d} {box} gives {cur} / {d} = {cur // d} in each.")
        return name, cur // d
    if ending < 0.55:
        price = rng.randint(2, 9)
        story.question.append(f"If {pron} {_verb(pron, 'sells', 'sell')} every one of them for ${price}, how many dollars {_verb(pron, 'does', 'do')} {pron} make?")
        story.steps.append(f"Selling {cur} {item} at ${price} each makes {cur} * {price} = {cur * price} dollars.")
        return name, cur * price
    story.question.append(rng.choice([f"How many {item} does {name} have now?",
                                       f"How many {item} {_verb(pron, 'has', 'have')} {pron} got in the end?"]))
    return name, cur


def _shopping(story: _Story, n_steps: int) -> tuple[str, int]:
    rng = story.rng
    name, pron = rng.choice(NAMES)
    Pron = pron.capitalize()
    goods = rng.sample(SHOP_ITEMS, k=min(3, max(1, n_steps - 1)))
    total = 0
    parts = []
    for good in goods:
        count, price = rng.randint(2, 4 + 2 * story.scale), rng.randint(2, 8 * story.scale)
        cost = count * price
        story.question.append(rng.choice([
            f"{name} buys {count} {good} at ${price} each." if not parts else f"{Pron} also {_verb(pron, 'buys', 'buy')} {count} {good} for ${price} apiece.",
            f"At the market {name} picks up {count} {good} costing ${price} each." if not parts else f"Then {pron} {_verb(pron, 'adds', 'add')} {count} {good} at ${price} each.",
        ]))
        story.steps.append(f"The {good} cost {count} * ${price} = ${cost}.")
        parts.append(cost)
        total += cost
    if len(parts) > 1:
        story.steps.append(f"Altogether {name} spends {' + '.join(f'${p}' for p in parts)} = ${total}.")
    if len(story.steps) < n_steps:
        bill = ((total // 10) + rng.randint(1, 5)) * 10
        story.question.append(f"{Pron} {_verb(pron, 'pays', 'pay')} with ${bill}. How much change, in dollars, {_verb(pron, 'does', 'do')} {pron} get back?")
        story.steps.append(f"The change is ${bill} - ${total} = ${bill - total}.")
        return name, bill - total
    story.question.append(f"How many dollars {_verb(pron, 'does', 'do')} {name} spend in total?")
    return name, total


def _production(story: _Story, n_steps: int) -> tuple[str, int]:
    rng = story.rng
    place, product = rng.choice(PRODUCTS)
    rate, hours = story.n(3, 20), rng.randint(2, 10)
    story.question.append(rng.choice([
        f"A {place} makes {rate} {product} every hour and works {hours} hours a day.",
        f"Every hour a {place} turns out {rate} {product}. It runs for {hours} hours each day.",
        f"A small {place} produces {rate} {product} per hour, {hours} hours a day.",
    ]))
    per_day = rate * hours
    story.steps.append(f"Each day the {place} makes {rate} * {hours} = {per_day} {product}.")
    total = per_day
    if n_steps >= 2:
        days = rng.randint(2, 7)
        story.question.append(rng.choice([f"It works for {days} days.", f"This goes on for {days} days.", f"It keeps this pace for {days} days."]))
        story.steps.append(f"In {days} days it makes {per_day} * {days} = {per_day * days} {product}.")
        total = per_day * days
    if n_steps >= 3:
        broken = rng.randint(1, max(1, total // 5))
        story.question.append(rng.choice([
            f"{broken} of the {product} turn out faulty and are thrown away.",
            f"An inspector rejects {broken} {product}.",
        ]))
        story.steps.append(f"Without the faulty ones there are {total} - {broken} = {total - broken} {product}.")
        total -= broken
    if n_steps >= 4:
        extra = story.n(5, 40)
        story.question.append(rng.choice([f"A second {place} sends over {extra} more {product}.", f"Then {extra} {product} arrive from another {place}."]))
        story.steps.append(f"With the extra ones there are {total} + {extra} = {total + extra} {product}.")
        total += extra
    story.question.append(rng.choice([f"How many good {product} are there in the end?", f"How many usable {product} are there altogether?"])
                          if n_steps >= 3 else rng.choice([f"How many {product} does it make?", f"How many {product} are made in total?"]))
    return place, total


def _small_collection(story: _Story, n_steps: int) -> tuple[str, int]:
    """A collection changed ``n_steps`` times by one-digit amounts, one fixed sentence per kind of change.

    One wording per sentence (``Ava has 7 stickers.``, ``She finds 3 more.``, ``She gives
    away 2.``): a model of a few hundred thousand parameters spends its capacity on finding
    the amounts and adding them, not on paraphrase.
    """
    rng = story.rng
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    Pron = pron.capitalize()
    cur = rng.randint(2, 12)
    story.question.append(f"{name} has {cur} {item}.")
    for _ in range(n_steps):
        if cur > 3 and rng.random() < 0.4:
            k = rng.randint(1, min(9, cur - 1))
            story.question.append(f"{Pron} {_verb(pron, 'gives', 'give')} away {k}.")
            story.steps.append(f"{cur} - {k} = {cur - k}")
            cur -= k
        else:
            k = rng.randint(1, 9)
            story.question.append(f"{Pron} {_verb(pron, 'finds', 'find')} {k} more.")
            story.steps.append(f"{cur} + {k} = {cur + k}")
            cur += k
    story.question.append(f"How many {item} does {name} have now?")
    return name, cur


FAMILIES = (_collection, _collection, _shopping, _production)
NUMBER_RANGES = {"standard": FAMILIES, "small": (_small_collection,)}


def synthetic_problem(rng: random.Random, min_steps: int = 1, max_steps: int = 4,
                      numbers: str = "standard") -> Example:
    """One problem drawn from ``rng``; ``numbers`` is a key of :data:`NUMBER_RANGES`."""
    n_steps = rng.randint(min_steps, max_steps)
    story = _Story(rng, scale=n_steps)
    _, answer = rng.choice(NUMBER_RANGES[numbers])(story, n_steps)
    question = " ".join(story.question)
    reasoning = "\n".join(story.steps)
    return Example(
        id=example_id("synthetic", question),
        source="synthetic",
        question=question,
        reasoning=reasoning,
        answer=str(answer),
        meta={"steps": n_steps},
    )


def generate_synthetic(n: int, seed: int, min_steps: int = 1, max_steps: int = 4,
                       numbers: str = "standard") -> list[Example]:
    """``n`` problems, identical for the same ``seed`` and settings."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if numbers not in NUMBER_RANGES:
        raise ValueError(f"numbers must be one of {sorted(NUMBER_RANGES)}, got {numbers!r}")
    rng = random.Random(seed)
    return [synthetic_problem(rng, min_steps, max_steps, numbers) for _ in range(n)]
