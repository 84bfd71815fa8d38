"""In-stage reducers: an elementwise sum of arrays over the tasks of one barrier stage.

Modules: :mod:`~elephas.collective.wire` (authenticated frames between two ranks),
:mod:`~elephas.collective.reducers` (:class:`HubReducer`, :class:`RingReducer`) and
:mod:`~elephas.collective.barrier` (:func:`open_reducer`: bind, exchange addresses once per stage
through the barrier context, connect).
"""

from elephas.collective.barrier import open_reducer
from elephas.collective.reducers import REDUCERS, HubReducer, Layout, Reducer, RingReducer, get
from elephas.collective.wire import CollectiveError

__all__ = ["REDUCERS", "CollectiveError", "HubReducer", "Layout", "Reducer", "RingReducer", "get", "open_reducer"]
