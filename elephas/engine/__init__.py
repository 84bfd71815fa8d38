"""The training engine: model shipping, data blocks, strategies, driver loop and worker task."""
