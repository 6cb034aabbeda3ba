"""The starter set: what trains by itself when the cache is empty, so every page has something to
show within minutes of a first start. FMNIST_STARTER=0 turns it off."""

from __future__ import annotations

from dataclasses import dataclass

from fmnist_core.base import environment
from fmnist_core.runs.recipes import get_recipe
from fmnist_core.store.cache import RunCache
from fmnist_core.training.config import RunConfig

SWITCH = "FMNIST_STARTER"


@dataclass(frozen=True)
class Starter:
    name: str  # what a person reads
    config: RunConfig
    serves: str  # the pages it makes useful
    recipe: str | None = None  # the named recipe it is, where it is one


TEST_SCALE = {"epochs": 1, "train_subset": 2000}  # FMNIST_SCALE=test: what the pages' forms can say too


def starter_set() -> list[Starter]:
    """The fastest runs that make every page useful, in the order the pages need them (at
    FMNIST_SCALE=test, each one epoch on 2,000 images, scored on 1,000 as the forms' runs are)."""
    scaled = (
        {**TEST_SCALE, "test_subset": environment.scored_test_images()}
        if environment.scale() == "test"
        else {}
    )
    encoder = get_recipe("fast_autoencoder").config(**scaled)
    # The Classifier page's own defaults (the model's: S2's wide head, the recipe's 10 epochs), so
    # that the page opens on a trained run.
    on_encoder = {"encoder_run": encoder.run_id}
    return [
        Starter(  # S3's recipe, 30 epochs (~1 min here): what the Classifier page starts from
            "MLP (S3's network and recipe)",
            RunConfig.for_model("mlp", **scaled),
            "Classifier, Try it, Compare",
        ),
        Starter(
            "fast autoencoder", encoder, "Autoencoder, Latent space, the garment check", "fast_autoencoder"
        ),
        Starter(
            "classifier on its encoder, frozen",
            RunConfig.for_model("encoder_classifier", {**on_encoder, "freeze_encoder": True}, **scaled),
            "Frozen vs fine-tuned",
        ),
        Starter(
            "classifier on its encoder, fine-tuned",
            RunConfig.for_model("encoder_classifier", {**on_encoder, "freeze_encoder": False}, **scaled),
            "Frozen vs fine-tuned",
        ),
        Starter(
            "fast CNN", get_recipe("fast_cnn").config(**scaled), "the best classifier, Try it", "fast_cnn"
        ),
    ]


def starter_of(model: str) -> Starter | None:
    """The starter set's run of `model`, where the model's form starts (None: its defaults)."""
    return next((s for s in starter_set() if s.config.model == model), None)


def enabled() -> bool:
    return environment.flag(SWITCH, True)


def start_if_empty(queue, cache: RunCache) -> list[Starter]:
    """Queue the starter set where the cache holds no run and the queue has had no job; returns
    what it queued (nothing where the switch is off)."""
    if not enabled() or queue.jobs() or cache.run_ids():  # the queue first: no disk read once it ran
        return []
    chosen = starter_set()
    for starter in chosen:
        queue.submit(starter.config)
    return chosen
