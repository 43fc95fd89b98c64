"""Target sets (which modules of a deep model carry LoRA): their order and colours, shared by
the figures that draw one line or point group per target set."""

from __future__ import annotations

import pandas as pd

from lorasweep.figures.style import categorical_colors, natural_sorted
from lorasweep.options import TARGET_PRESETS


def target_order(targets) -> list[str]:
    """Presets first (attention, mlp, all), then the other target sets in natural order; a
    single-layer run's empty target set is not one."""
    present = set(pd.Series(targets).dropna())
    presets = [t for t in TARGET_PRESETS if t in present]
    return presets + natural_sorted(present - set(TARGET_PRESETS))


def target_colors(targets) -> dict:
    """One colour per target set, in :func:`target_order`."""
    return categorical_colors(target_order(targets))
