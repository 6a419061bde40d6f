"""Wording of the prompts per kind of dataset (movies are watched, products purchased)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    """Nouns that make the paper's prompts read right for a dataset."""

    history_noun: str
    history_title: str
    item_noun: str
    prior_items_title: str


MOVIES = Domain("watching", "Watching", "movie", "Movies Watched Just Before This One by Its Viewers")
PRODUCTS = Domain("purchase", "Purchase", "item", "Items Purchased Just Before This One by Its Buyers")
PLACES = Domain("visit", "Visit", "place", "Places Visited Just Before This One by Its Visitors")


def domain_for(dataset_name: str) -> Domain:
    """Movies for MovieLens, places for Yelp, products otherwise (Amazon and unknown)."""
    if dataset_name.startswith("ml-"):
        return MOVIES
    if dataset_name.startswith("yelp"):
        return PLACES
    return PRODUCTS
