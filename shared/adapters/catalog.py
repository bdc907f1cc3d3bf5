"""The image catalog: ``pz:img:<id>`` hashes of creator, model version and unit embedding."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.domain.events import ImageRegistered


def catalog_entry(event: ImageRegistered, creator: str) -> dict[Any, Any]:
    """The stored form of an image: its embedding as a unit float32 vector."""
    vector = np.asarray(event.embedding, dtype=np.float64)
    unit = (vector / np.linalg.norm(vector)).astype("<f4")
    return {"creator": creator, "version": event.model_version, "emb": unit.tobytes()}
