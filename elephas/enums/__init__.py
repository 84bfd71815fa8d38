"""String enums for ``mode`` and ``frequency``, importable as upstream elephas spelled them.

``from elephas.enums.modes import Mode`` and ``from elephas.enums.frequency import Frequency`` keep
scripts written for upstream elephas working; every place that takes a mode or a frequency also
takes the plain strings these enums stand for.
"""

from .frequency import Frequency
from .modes import Mode

__all__ = ["Frequency", "Mode"]
