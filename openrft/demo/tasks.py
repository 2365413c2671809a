"""Tasks shaped the way users bring them to reinforcement fine-tuning: OpenAI's RFT JSONL (``messages`` plus the
answer in an item field of the task's own naming) and a grader that reads that field, with no OpenRFT option.

Used by the demo and by ``bench/quality`` (held-out accuracy of the method on data it was not written for):

- ``intent``: text classification of a customer message into one of four categories (``label`` field,
  python grader).
- ``order_id``: short extraction of the order number from a message that carries other numbers too
  (``order_id`` field, ``string_check`` grader).
- ``unit_price``: a one-step word problem with a numeric answer (``answer`` field, python grader that reads the
  last number in the reply).

Every generator is deterministic in its seed; train, validation and test never share a generated message.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]

# -- intent: text classification ------------------------------------------------------------------------------

INTENT_LABELS = ("billing", "shipping", "technical", "account")
_PRODUCTS = (
    "blender",
    "headphones",
    "desk lamp",
    "router",
    "coffee grinder",
    "backpack",
    "keyboard",
    "kettle",
)
_INTENT_PHRASES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {product}",
        "my invoice shows {amount} but I paid less",
        "I still have not received the refund for the {product}",
        "the discount code was not applied to my payment",
        "why is there an extra fee of {amount} on my card",
        "I need a receipt for the {product} I paid for",
    ),
    "shipping": (
        "my {product} has not arrived yet",
        "the tracking number for my {product} does not work",
        "the parcel was delivered to the wrong address",
        "can I change the delivery date for my {product}",
        "the courier left the box outside in the rain",
        "it has been {days} days and the package is still in transit",
    ),
    "technical": (
        "the {product} stops working after a few minutes",
        "the app crashes every time I open the settings",
        "my {product} will not turn on even when charged",
        "the firmware update failed halfway",
        "the {product} makes a loud noise and then shuts down",
        "I get an error message when I connect the {product} to wifi",
    ),
    "account": (
        "I cannot log in to my account",
        "please change the email address on my profile",
        "I forgot my password and the reset link expired",
        "how do I delete my account and my data",
        "someone else may have signed in to my account",
        "I want to update the phone number on my profile",
    ),
}
_OPENERS = ("Hi,", "Hello,", "Good morning.", "Hey there.", "", "Dear support,")
_CLOSERS = (
    "Thanks.",
    "Please help.",
    "Can you look into it?",
    "",
    "Thank you in advance.",
    "This is urgent.",
)
INTENT_INSTRUCTION = (
    "Classify the customer message into one of these categories: billing, shipping, technical, account. "
    "Reply with the category only."
)
INTENT_GRADER: dict[str, Any] = {
    "type": "python",
    "name": "category",
    "source": (
        "def grade(sample, item):\n"
        "    reply = sample['output_text'].strip().lower().rstrip('.!')\n"
        "    return 1.0 if reply == item['label'] else 0.0\n"
    ),
}


def _intent_messages(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for label, phrases in _INTENT_PHRASES.items():
        for phrase in phrases:
            for product in _PRODUCTS:
                for opener in _OPENERS:
                    text = phrase.format(
                        product=product,
                        amount=f"${rng.randint(5, 99)}.{rng.randint(0, 99):02d}",
                        days=rng.randint(3, 21),
                    )
                    closer = rng.choice(_CLOSERS)
                    message = " ".join(p for p in (opener, text[0].upper() + text[1:] + ".", closer) if p)
                    out.append((message, label))
    return list(dict.fromkeys(out))


def intent_rows(n: int, rng: random.Random) -> list[Row]:
    pool = _intent_messages(rng)
    rng.shuffle(pool)
    by_label: dict[str, list[str]] = {lab: [m for m, cat in pool if cat == lab] for lab in INTENT_LABELS}
    rows = []
    for i in range(n):  # every category equally often
        label = INTENT_LABELS[i % len(INTENT_LABELS)]
        message = by_label[label].pop()
        rows.append(
            {
                "messages": [{"role": "user", "content": f"{INTENT_INSTRUCTION}\n\nMessage: {message}"}],
                "label": label,
            }
        )
    rng.shuffle(rows)
    return rows


# -- order_id: short extraction --------------------------------------------------------------------------------

_NAMES = ("Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Luca")
_EXTRACT_TEMPLATES = (
    "Hi, this is {name}. My order {oid} arrived with {qty} items missing. I paid {amount} on {date}.",
    "{name} here. I ordered {qty} units on {date} (order number {oid}) and was charged {amount}.",
    "Hello, I am writing about order #{oid}. It cost {amount} and I placed it on {date}. Regards, {name}",
    "Please cancel order {oid}. I placed it on {date} for {qty} items, total {amount}. - {name}",
    "On {date} I paid {amount} for {qty} items. The order ID is {oid}. My name is {name}.",
    "Order no. {oid}: {qty} items, {amount}, ordered {date}. The box was damaged. {name}",
)
_MONTHS = ("January", "March", "April", "June", "July", "September", "October", "December")
EXTRACT_INSTRUCTION = "Extract the order number from the customer message. Reply with the order number only."
EXTRACT_GRADER: dict[str, Any] = {
    "type": "string_check",
    "name": "order number",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.order_id }}",
    "operation": "eq",
}


def order_id_rows(n: int, rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    seen: set[str] = set()
    while len(rows) < n:
        oid = f"{rng.choice('ABCDEFGHKLMNPRSTW')}{rng.randint(10000, 99999)}"
        if oid in seen:
            continue
        seen.add(oid)
        message = rng.choice(_EXTRACT_TEMPLATES).format(
            name=rng.choice(_NAMES),
            oid=oid,
            qty=rng.randint(2, 12),
            amount=f"${rng.randint(10, 499)}.{rng.randint(0, 99):02d}",
            date=f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}",
        )
        rows.append(
            {
                "messages": [{"role": "user", "content": f"{EXTRACT_INSTRUCTION}\n\n{message}"}],
                "order_id": oid,
            }
        )
    return rows


# -- unit_price: a numeric skill -------------------------------------------------------------------------------

_ITEMS = (
    "pens",
    "apples",
    "tickets",
    "notebooks",
    "candles",
    "mugs",
    "stamps",
    "plants",
    "batteries",
    "cookies",
)
_NUMERIC_TEMPLATES = (
    "One of the {item} costs {price} dollars. How many dollars do {qty} {item} cost?",
    "{name} buys {qty} {item} at {price} dollars each. How much does {name} pay in dollars?",
    "A box holds {qty} {item} and each costs {price} dollars. What is the price of the box in dollars?",
    "The {item} are {price} dollars apiece. What do {qty} of them cost, in dollars?",
)
NUMERIC_INSTRUCTION = "Solve the problem. End your reply with the final number."
NUMERIC_GRADER: dict[str, Any] = {
    "type": "python",
    "name": "total",
    "source": (
        "import re\n"
        "def grade(sample, item):\n"
        "    numbers = re.findall(r'-?\\d+(?:\\.\\d+)?', sample['output_text'].replace(',', ''))\n"
        "    return 1.0 if numbers and float(numbers[-1]) == float(item['answer']) else 0.0\n"
    ),
}


def unit_price_rows(n: int, rng: random.Random) -> list[Row]:
    # Each (price, quantity) pair once: held-out questions ask products the training rows never showed.
    combos = [(p, q) for p in range(2, 30) for q in range(2, 10)]
    if n > len(combos):
        raise ValueError(f"unit_price has {len(combos)} distinct problems; {n} asked")
    rng.shuffle(combos)
    rows = []
    for price, qty in combos[:n]:
        text = rng.choice(_NUMERIC_TEMPLATES).format(
            item=rng.choice(_ITEMS), price=price, qty=qty, name=rng.choice(_NAMES)
        )
        rows.append(
            {
                "messages": [{"role": "user", "content": f"{NUMERIC_INSTRUCTION}\n\n{text}"}],
                "answer": str(price * qty),
            }
        )
    return rows


# -- grader-only tasks: the rows hold no answer, only what the grader reads --------------------------------------

_TOPICS = (
    "the sea",
    "a rainy morning",
    "coffee",
    "a night train",
    "the moon",
    "an old library",
    "a mountain lake",
    "a city park",
    "winter",
    "a small bakery",
    "a thunderstorm",
    "the desert",
    "a football match",
    "a garden",
    "a busy market",
    "autumn leaves",
)
_KEYWORDS = (
    "silver",
    "quiet",
    "window",
    "bright",
    "bicycle",
    "candle",
    "river",
    "orange",
    "whisper",
    "golden",
    "paper",
    "wooden",
    "cold",
    "smile",
    "bridge",
    "green",
)
CONSTRAINT_GRADER: dict[str, Any] = {
    "type": "python",
    "name": "requirements",
    # Partial credit: the share of the three requirements the reply meets.
    "source": (
        "import re\n"
        "def grade(sample, item):\n"
        "    text = sample['output_text'].strip()\n"
        '    words = re.findall(r"[A-Za-z0-9\']+", text)\n'
        "    keyword = re.search(r'\\b' + re.escape(item['keyword']) + r'\\b', text, re.I) is not None\n"
        "    short = 0 < len(words) <= int(item['max_words'])\n"
        "    one_sentence = re.fullmatch(r'[^.!?\\n]+[.!?]', text) is not None\n"
        "    return (keyword + short + one_sentence) / 3\n"
    ),
}


def keyword_sentence_rows(n: int, rng: random.Random) -> list[Row]:
    combos = [(t, k, w) for t in _TOPICS for k in _KEYWORDS for w in (8, 10, 12)]
    if n > len(combos):
        raise ValueError(f"keyword_sentence has {len(combos)} distinct prompts; {n} asked")
    rng.shuffle(combos)
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": f'Write one sentence about {topic} that uses the word "{keyword}". '
                    f"Use at most {words} words.",
                }
            ],
            "keyword": keyword,
            "max_words": words,
        }
        for topic, keyword, words in combos[:n]
    ]


_CITIES = ("Berlin", "Madrid", "Oslo", "Lisbon", "Vienna", "Dublin", "Prague", "Warsaw", "Athens", "Zurich")
_GOODS = ("chairs", "lamps", "mugs", "towels", "notebooks", "kettles", "pillows", "umbrellas")
_ORDER_TEMPLATES = (
    "Hi, this is {name} from {city}. Could you send me {qty} {goods}?",
    "Hello! {name} here, writing from {city}. I would like to order {qty} {goods}.",
    "My name is {name} and I live in {city}. Please deliver {qty} {goods} next week.",
    "Good morning, I need {qty} {goods} shipped to {city}. Thanks, {name}",
    "{name} from {city} again: put me down for {qty} {goods}, please.",
    "Dear shop, please reserve {qty} {goods} for me. I will pick them up in {city}. Best, {name}",
)
JSON_INSTRUCTION = (
    "Extract the customer's name, their city and the quantity ordered from the message. Reply with a JSON "
    'object with the keys "name", "city" and "quantity" (a number), and nothing else.'
)
JSON_GRADER: dict[str, Any] = {
    "type": "python",
    "name": "extraction",
    # Checked against the message itself (item.text): the row carries no expected JSON. A quarter for a JSON
    # object with exactly the three keys, a quarter for each value that matches the message (the quantity as a
    # JSON number, as the instruction asks).
    "source": (
        "import json, re\n"
        f"NAMES = {list(_NAMES)!r}\n"
        f"CITIES = {list(_CITIES)!r}\n"
        "def grade(sample, item):\n"
        "    text = item['text']\n"
        "    name = next(n for n in NAMES if re.search(r'\\b' + n + r'\\b', text))\n"
        "    city = next(c for c in CITIES if c in text)\n"
        "    quantity = int(re.search(r'\\b\\d+\\b', text).group(0))\n"
        "    found = re.search(r'\\{.*\\}', sample['output_text'], re.S)\n"
        "    if not found:\n"
        "        return 0.0\n"
        "    try:\n"
        "        obj = json.loads(found.group(0))\n"
        "    except ValueError:\n"
        "        return 0.0\n"
        "    if not isinstance(obj, dict):\n"
        "        return 0.0\n"
        "    score = 0.25 * (set(obj) == {'name', 'city', 'quantity'})\n"
        "    score += 0.25 * (str(obj.get('name', '')).strip() == name)\n"
        "    score += 0.25 * (str(obj.get('city', '')).strip() == city)\n"
        "    score += 0.25 * (type(obj.get('quantity')) is int and obj['quantity'] == quantity)\n"
        "    return score\n"
    ),
}


def json_extract_rows(n: int, rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    seen: set[str] = set()
    while len(rows) < n:
        text = rng.choice(_ORDER_TEMPLATES).format(
            name=rng.choice(_NAMES),
            city=rng.choice(_CITIES),
            qty=rng.randint(2, 40),
            goods=rng.choice(_GOODS),
        )
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {"messages": [{"role": "user", "content": f"{JSON_INSTRUCTION}\n\n{text}"}], "text": text}
        )
    return rows


# -- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserTask:
    name: str
    kind: str
    rows: Callable[[int, random.Random], list[Row]]
    grader: dict[str, Any]
    chance: float
    """Accuracy of a uniform guess over the answer space (0 where it is open-ended)."""


USER_TASKS: dict[str, UserTask] = {
    "intent": UserTask("intent", "text classification", intent_rows, INTENT_GRADER, 0.25),
    "order_id": UserTask("order_id", "short extraction", order_id_rows, EXTRACT_GRADER, 0.0),
    "unit_price": UserTask("unit_price", "numeric skill", unit_price_rows, NUMERIC_GRADER, 0.0),
    "keyword_sentence": UserTask(
        "keyword_sentence",
        "constraint following (grader only)",
        keyword_sentence_rows,
        CONSTRAINT_GRADER,
        0.0,
    ),
    "json_extract": UserTask(
        "json_extract", "JSON extraction (grader only)", json_extract_rows, JSON_GRADER, 0.0
    ),
}


def make_splits(name: str, n_train: int, n_valid: int, n_test: int, *, seed: int = 0) -> dict[str, list[Row]]:
    """Disjoint train / validation / test rows of a task (one generated pool, split)."""
    task = USER_TASKS[name]
    rng = random.Random(f"{name}:{seed}")
    rows = task.rows(n_train + n_valid + n_test, rng)
    keys = [json.dumps(r["messages"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"task {name} generated a repeated message")
    return {
        "train": rows[:n_train],
        "valid": rows[n_train : n_train + n_valid],
        "test": rows[n_train + n_valid :],
    }


def write_jsonl(path: Path, rows: list[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
