"""Update rules (strategies); :func:`get` resolves a mode name to a strategy instance."""
