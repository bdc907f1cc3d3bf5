"""Pure taste-learning core: population prior, incremental learner, grid choice, minting rule.

No I/O here; services persist ``TasteLearner.state()`` bytes and ``TastePrior.to_payload()``.
"""

from shared.taste.grids import choose_grid
from shared.taste.learner import TasteLearner
from shared.taste.minting import cosine_distance, should_mint
from shared.taste.prior import TastePrior, estimate_prior

__all__ = [
    "TasteLearner",
    "TastePrior",
    "choose_grid",
    "cosine_distance",
    "estimate_prior",
    "should_mint",
]
